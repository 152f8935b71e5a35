"""retina.metrics against scikit-learn / scikit-image / SciPy on random inputs and generated vessels."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import euler_number, label
from sklearn.metrics import average_precision_score, roc_auc_score

import retina_kernels
from retina import metrics
from retina.data import vessel_mask, vessel_volume


def random_masks(n, h, w, seed, density=0.5):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, generator=gen) < density


def test_overlap_scores_match_the_definitions():
    pred, target = random_masks(4, 23, 31, 0), random_masks(4, 23, 31, 1)
    fov = random_masks(1, 23, 31, 2, 0.8)
    scores = metrics.overlap_scores(pred, target, fov)
    for i in range(4):
        p, t, f = pred[i].numpy(), target[i].numpy(), fov[0].numpy()
        tp, fp = (p & t & f).sum(), (p & ~t & f).sum()
        fn, tn = (~p & t & f).sum(), (~p & ~t & f).sum()
        assert scores["dice"][i] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert scores["jaccard"][i] == pytest.approx(tp / (tp + fp + fn))
        assert scores["precision"][i] == pytest.approx(tp / (tp + fp))
        assert scores["recall"][i] == pytest.approx(tp / (tp + fn))
        assert scores["specificity"][i] == pytest.approx(tn / (tn + fp))
        assert scores["accuracy"][i] == pytest.approx((tp + tn) / (tp + fp + fn + tn))
    pooled = metrics.overlap_scores(pred, target, fov, pooled=True)
    counts = metrics.confusion(pred, target, fov).sum(0)
    assert pooled["dice"] == pytest.approx(float(2 * counts[0] / (2 * counts[0] + counts[1] + counts[2])))
    empty = metrics.overlap_scores(torch.zeros(1, 5, 5, dtype=torch.bool), torch.zeros(1, 5, 5, dtype=torch.bool))
    assert empty["dice"].item() == 1.0  # two empty masks agree


@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_pr_auc_match_scikit_learn(ties):
    gen = torch.Generator().manual_seed(3)
    prob = torch.rand(3, 40, 50, generator=gen, dtype=torch.float64)
    if ties:
        prob = (prob * 8).round() / 8  # many equal scores
    target = (prob + 0.6 * torch.rand(3, 40, 50, generator=gen, dtype=torch.float64)) > 0.8
    fov = random_masks(3, 40, 50, 4, 0.7)
    inside = fov.numpy()
    expected_roc = roc_auc_score(target.numpy()[inside], prob.numpy()[inside])
    expected_ap = average_precision_score(target.numpy()[inside], prob.numpy()[inside])
    assert metrics.roc_auc(prob, target, fov).item() == pytest.approx(expected_roc, abs=1e-12)
    assert metrics.pr_auc(prob, target, fov).item() == pytest.approx(expected_ap, abs=1e-12)


def test_iou_per_class():
    gen = torch.Generator().manual_seed(5)
    pred, target = torch.randint(0, 4, (2, 20, 30), generator=gen), torch.randint(0, 4, (2, 20, 30), generator=gen)
    iou = metrics.iou_per_class(pred, target, 5)
    for c in range(4):
        p, t = pred == c, target == c
        assert iou[c].item() == pytest.approx(((p & t).sum() / (p | t).sum()).item())
    assert torch.isnan(iou[4])  # absent from both
    assert metrics.mean_iou(pred, target, 5).item() == pytest.approx(iou[:4].mean().item())
    with pytest.raises(ValueError, match="class indices outside"):
        metrics.iou_per_class(pred, target, 3)


def test_cldice_metric():
    target = torch.from_numpy(vessel_mask(96, 96, seed=2))[None]
    assert metrics.cldice(target, target).item() == pytest.approx(1.0)
    broken = target.clone()
    broken[:, 40:56, :] = False
    sp = retina_kernels.skeletonize(broken[:, None]).squeeze(1)
    st = retina_kernels.skeletonize(target[:, None]).squeeze(1)
    tprec = (sp & target).sum() / sp.sum()
    tsens = (st & broken).sum() / st.sum()
    expected = (2 * tprec * tsens / (tprec + tsens)).item()
    assert metrics.cldice(broken, target).item() == pytest.approx(expected) and expected < 0.99


@pytest.mark.parametrize("seed", range(4))
def test_betti_numbers_2d_against_skimage(seed):
    mask = random_masks(1, 37, 41, seed, 0.45)[0].numpy()
    b0, b1 = metrics.betti_numbers(torch.from_numpy(mask)).tolist()
    assert b0 == label(mask, connectivity=2).max()
    assert b0 - b1 == euler_number(mask, connectivity=2)
    padded = np.pad(~mask, 1, constant_values=True)
    assert b1 == label(padded, connectivity=1).max() - 1


@pytest.mark.parametrize("seed", range(3))
def test_betti_numbers_3d_against_skimage(seed):
    mask = random_masks(9, 10, 11, seed, 0.4).numpy()
    b0, b1, b2 = metrics.betti_numbers(torch.from_numpy(mask)[None, None]).squeeze(0).tolist()
    assert b0 == label(mask, connectivity=3).max()
    assert b2 == label(np.pad(~mask, 1, constant_values=True), connectivity=1).max() - 1
    assert b0 - b1 + b2 == euler_number(mask, connectivity=3)
    assert metrics.euler_characteristic(torch.from_numpy(mask)[None]).item() == euler_number(mask, connectivity=3)


def test_betti_of_known_shapes_and_errors():
    ring = torch.zeros(9, 9, dtype=torch.bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    assert metrics.betti_numbers(ring).tolist() == [1, 1]
    vessels = torch.from_numpy(vessel_mask(128, 128, seed=0))
    assert metrics.betti_numbers(vessels)[0].item() == label(vessels.numpy(), connectivity=2).max()
    hollow = torch.ones(1, 1, 5, 5, 5, dtype=torch.bool)
    hollow[0, 0, 2, 2, 2] = False
    assert metrics.betti_numbers(hollow).tolist() == [[1, 0, 1]]
    broken = ring.clone()
    broken[2:4, 4] = False  # opens the hole to the outside
    assert metrics.betti_errors(broken[None], ring[None]).tolist() == [[0, 1]]
    volume = torch.from_numpy(vessel_volume(16, 24, 24, seed=1))[None, None]
    assert metrics.betti_numbers(volume)[0, 0].item() == label(volume[0, 0].numpy(), connectivity=3).max()
    with pytest.raises(ValueError, match="mask must be"):
        metrics.betti_numbers(torch.zeros(2, 3, 4, 5))


def test_evaluate_folders_and_tensors(tmp_path):
    from retina import io

    labels = [vessel_mask(48, 56, seed=i) for i in range(3)]
    for i, m in enumerate(labels):
        io.write_image(tmp_path / "label" / f"img{i}.png", (m * 255).astype(np.uint8))
        noisy = np.clip(m * 0.9 + 0.3 * np.random.default_rng(i).random(m.shape), 0, 1)
        io.write_image(tmp_path / "pred" / f"img{i}.png", (noisy * 255).astype(np.uint8))
    summary = metrics.evaluate(tmp_path / "pred", tmp_path / "label", protocol="iternet", out_dir=tmp_path / "out")
    assert 0.5 < summary["roc_auc"] <= 1 and 0 < summary["f1"] <= 1
    rows = (tmp_path / "out" / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("id,roc_auc,pr_auc") and [r.split(",")[0] for r in rows[1:]] == ["img0", "img1", "img2"]
    assert '"protocol": "iternet"' in (tmp_path / "out" / "summary.json").read_text()
    perfect = torch.from_numpy(np.stack(labels)).double()
    s3 = metrics.evaluate(perfect, perfect > 0.5, protocol="s3octa", min_area=5, min_percent=None)
    assert s3["dice"] == pytest.approx(1.0) and s3["cldice"] == pytest.approx(1.0) and s3["hd95"] == 0
    speck = perfect.clone()
    isolated = ndimage.binary_dilation(labels[0], iterations=2) == 0  # 2 px away from every vessel
    y, x = np.argwhere(isolated)[0]
    speck[0, y, x] = 1.0  # a one-pixel component: removed by the S3-OCTA protocol
    assert metrics.evaluate(speck, perfect > 0.5, protocol="s3octa", min_area=5, min_percent=None)["dice"] == 1.0
    assert metrics.evaluate(speck, perfect > 0.5, protocol="s3octa", min_area=1, min_percent=None)["dice"] < 1
    (tmp_path / "pred" / "img1.png").unlink()  # a label without a prediction: listed, and an error unless allowed
    with pytest.raises(ValueError, match=r"1 label\(s\) have no prediction .*\['img1'\]"):
        metrics.evaluate(tmp_path / "pred", tmp_path / "label")
    said = []
    metrics.evaluate(tmp_path / "pred", tmp_path / "label", allow_missing=True, report=said.append)
    assert said and "scoring 2 of 3 labels" in said[0]
    (tmp_path / "label" / "img2.png").unlink()
    with pytest.raises(ValueError, match="no label for prediction"):
        metrics.evaluate(tmp_path / "pred", tmp_path / "label")
    with pytest.raises(ValueError, match="protocol must be one of"):
        metrics.evaluate(perfect, perfect, protocol="drive")


def test_evaluate_reads_16_bit_predictions_at_their_depth_and_refuses_overlays(tmp_path):
    """52429 / 65535 is just above S3-OCTA's 0.8; cut to 8 bits (OpenCV's grayscale read) it was 204 / 255,
    exactly 0.8, and the prediction scored as empty. A colour overlay is not a probability map."""
    from retina import io

    m = vessel_mask(40, 40, seed=5)
    io.write_image(tmp_path / "label" / "a.png", (m * 255).astype(np.uint8))
    io.write_image(tmp_path / "pred" / "a.png", (m * 52429).astype(np.uint16))
    summary = metrics.evaluate(tmp_path / "pred", tmp_path / "label", protocol="retina", threshold=0.8)
    assert summary["dice"] == 1.0
    io.write_image(tmp_path / "overlay" / "a.png", np.stack([m * 255, m * 100, m * 0], 2).astype(np.uint8))
    with pytest.raises(ValueError, match="a colour image, but a prediction .* must be one channel"):
        metrics.evaluate(tmp_path / "overlay", tmp_path / "label")
    grey_rgb = np.repeat((m * 230).astype(np.uint8)[..., None], 3, 2)  # equal channels: gray stored as colour
    io.write_image(tmp_path / "rgb" / "a.png", grey_rgb)
    assert metrics.evaluate(tmp_path / "rgb", tmp_path / "label", protocol="retina")["dice"] == 1.0


def test_evaluate_measures_the_faz_as_one_zone(tmp_path, capsys):
    from retina import io
    from retina.cli import main

    label = np.zeros((40, 40), np.uint8)
    label[5:26, 5:26] = 255  # 441 px
    pred = label.copy()
    pred[33:36, 33:36] = 255  # a speck the zone's measurements leave out
    io.write_image(tmp_path / "label" / "a.png", label)
    io.write_image(tmp_path / "pred" / "a.png", pred)
    summary = metrics.evaluate(tmp_path / "pred", tmp_path / "label", protocol="retina", biomarkers="faz", pixel_mm=0.01)
    assert summary["pred_area_mm2"] == pytest.approx(441e-4) == summary["label_area_mm2"]
    assert summary["pred_circularity"] == pytest.approx(summary["label_circularity"])
    with pytest.raises(ValueError, match="biomarkers must be one of"):
        metrics.evaluate(tmp_path / "pred", tmp_path / "label", biomarkers="veins")
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "label"), "--out", str(tmp_path / "ev"),
                 "--protocol", "retina", "--biomarkers", "faz"]) == 0
    assert "pred_area_px2: 441.0000" in capsys.readouterr().out


def test_evaluate_biomarkers_are_taken_inside_the_fov():
    mask = torch.from_numpy(vessel_mask(40, 40, seed=2)).bool()[None]
    fov = torch.zeros(1, 40, 40, dtype=torch.bool)
    fov[:, 5:35, 5:35] = True
    summary = metrics.evaluate(mask.double() * 0.9, mask, fov=fov, protocol="retina", biomarkers=True)
    inside = mask[0][fov[0]].double().mean().item()
    assert summary["pred_vessel_area_density"] == pytest.approx(inside) == summary["label_vessel_area_density"]
    assert inside != pytest.approx(mask.double().mean().item())


def test_evaluate_reports_progress_per_stage(tmp_path):
    from retina import io

    for i in range(3):
        m = vessel_mask(32, 32, seed=i)
        io.write_image(tmp_path / "label" / f"{i}.png", (m * 255).astype(np.uint8))
        io.write_image(tmp_path / "pred" / f"{i}.png", (m * 200).astype(np.uint8))
    for protocol in ("s3octa", "iternet", "retina"):
        seen = []
        metrics.evaluate(tmp_path / "pred", tmp_path / "label", protocol=protocol, biomarkers=True,
                         progress=lambda stage, done, total: seen.append((stage, done, total)))
        stages = list(dict.fromkeys(stage for stage, _, _ in seen))
        assert stages == ["read", "score", "biomarkers (pred)", "biomarkers (label)"], protocol
        for stage in stages:
            assert [d for s, d, t in seen if s == stage][-1] == 3 and {t for s, _, t in seen if s == stage} == {3}


def test_evaluate_command(tmp_path, capsys):
    from retina import io
    from retina.cli import main

    for i in range(2):
        m = vessel_mask(96, 96, seed=i)
        io.write_image(tmp_path / "label" / f"{i}.png", (m * 255).astype(np.uint8))
        io.write_image(tmp_path / "pred" / f"{i}.png", (m * 230).astype(np.uint8))
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "label"), "--out", str(tmp_path / "ev")])
    assert code == 0 and "dice: 1.0000 ± 0.0000" in capsys.readouterr().out  # mean ± SD over the images
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "label"), "--out", str(tmp_path / "bio"),
                 "--biomarkers", "--pixel-mm", "0.01"])
    out = capsys.readouterr().out
    assert code == 0 and "pred_vessel_area_density" in out and "label_fractal_dimension" in out
    header, first = (tmp_path / "bio" / "per_image.csv").read_text().splitlines()[:2]
    columns = dict(zip(header.split(","), first.split(",")))
    # the prediction is the label here: the same measurements on both sides
    assert columns["pred_vessel_diameter_index_mm"] == columns["label_vessel_diameter_index_mm"]
    assert main(["evaluate", str(tmp_path / "nowhere"), str(tmp_path / "label")]) == 2
    # probabilities that retina predict wrote: the protocol's threshold is not its masks' (0.5), and the
    # command says so (a model at 0.6 scores 1 by its masks and 0 by S3-OCTA's 0.8)
    for i in range(2):
        m = vessel_mask(96, 96, seed=i)
        io.write_image(tmp_path / "predicted" / "prob" / f"{i}.png", (m * 153).astype(np.uint8))
    (tmp_path / "predicted" / "predict.json").write_text('{"threshold": 0.5}')
    args = ["evaluate", str(tmp_path / "predicted" / "prob"), str(tmp_path / "label")]
    assert main([*args, "--out", str(tmp_path / "p1")]) == 0
    out = capsys.readouterr().out
    assert "note: retina predict drew the masks beside these probabilities at > 0.5; the s3octa protocol " \
           "thresholds at 0.8" in out and "--threshold 0.5 scores them" in out and "dice: 0.0000" in out
    assert main([*args, "--out", str(tmp_path / "p2"), "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "note: retina predict" not in out and "dice: 1.0000" in out


def test_propagated_labelling_matches_opencv_in_2d():
    from retina.metrics.topology import _components, _propagated_components

    masks = random_masks(3, 30, 33, 9, 0.5)
    for full in (True, False):
        assert torch.equal(_propagated_components(masks, full), _components(masks, full))


def test_skeleton_points_count_each_junction_once():
    cross = torch.zeros(15, 15, dtype=torch.bool)
    cross[7, 2:13] = True
    cross[2:13, 7] = True  # one junction (the centre: four neighbours), four endpoints
    assert metrics.skeleton_points(cross).tolist() == [[4, 1]]
    y = torch.zeros(12, 12, dtype=torch.bool)
    for i in range(5):
        y[6 - i, 5 - i] = y[6 - i, 6 + i] = True  # two diagonal arms meeting ...
    y[6:11, 5] = True  # ... on a vertical stem: pixels around the fork have 3 neighbours, one junction
    points = metrics.skeleton_points(y[None, None])
    assert points.tolist() == [[3, 1]]
    block = torch.zeros(9, 9, dtype=torch.bool)
    block[4:6, 1:8] = True  # a 2x2-thick bar: its pixels all have >= 3 neighbours, one cluster
    assert metrics.skeleton_points(block)[0, 1].item() == 1
    with pytest.raises(ValueError, match="skeleton must be"):
        metrics.skeleton_points(torch.zeros(2, 2, 3, 3))


def test_evaluate_reports_the_sd_of_per_image_means():
    labels = torch.zeros(3, 32, 32)
    labels[:, 8:24, 8:24] = 1
    probs = labels.clone()
    probs[1, 8:24, 8:16] = 0  # half the square: Dice 2/3
    probs[2, 8:24, 8:12] = 0  # three quarters: Dice 6/7
    dice = np.array([1, 2 / 3, 6 / 7])
    summary = metrics.evaluate(probs, labels, protocol="retina", sd=True, biomarkers=True)
    assert summary["dice"] == pytest.approx(dice.mean()) and summary["dice_sd"] == pytest.approx(dice.std(ddof=1))
    assert list(summary).index("dice_sd") == list(summary).index("dice") + 1
    assert "pred_vessel_area_density_sd" in summary
    pooled = metrics.evaluate(probs, labels, protocol="iternet", sd=True, biomarkers=True)
    assert "dice_sd" not in pooled and "auc_sd" not in pooled and "pred_vessel_area_density_sd" in pooled
    assert "dice_sd" not in metrics.evaluate(probs, labels, protocol="retina")  # only when asked
