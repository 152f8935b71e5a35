"""The evaluation protocols equal the code they are named after, and the distance metrics the library
whose convention they name: medpy (S3-OCTA's metrics), MONAI (HausdorffDistanceMetric), scikit-learn
(IterNet's evaluate.py), on random and vessel-like pairs."""

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from retina import metrics
from retina.data import vessel_mask
from retina.metrics import protocols

medpy = pytest.importorskip("medpy.metric.binary")


def pairs(count=12, size=(48, 56)):
    """(prediction probabilities, label) pairs: vessel trees with noisy, shifted, broken predictions, and
    random blobs."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        label = vessel_mask(*size, seed=i).astype(bool)
        if i % 3 == 2:
            label = ndimage.binary_dilation(rng.random(size) < 0.02, iterations=2)
        prob = np.clip(label * 0.85 + rng.normal(0, 0.25, size), 0, 1)
        if i % 4 == 1:
            prob = np.roll(prob, (1, 2), (0, 1))
        out.append((prob, label))
    return out


def s3octa_as_published(prob, label, min_area=50, min_percent=10):
    """S3-OCTA's calculate_metrics, restated with its own libraries (medpy, scikit-image, OpenCV)."""
    from skimage.morphology import skeletonize

    pred = (prob > 0.8).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(pred, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    kept = np.zeros_like(pred)
    if areas.size:
        limit = np.percentile(areas, min_percent)
        for i in range(1, count):
            if stats[i, cv2.CC_STAT_AREA] >= min(min_area, limit):
                kept[labels == i] = 1
    label = label.astype(np.uint8)

    def cl(v_p, v_l):
        score = lambda v, s: np.sum(v * s) / np.sum(s)  # noqa: E731
        a, b = score(v_p, skeletonize(v_l)), score(v_l, skeletonize(v_p))
        return 2 * a * b / (a + b + 1e-8)

    fns = {"dice": medpy.dc, "jaccard": medpy.jc, "cldice": cl, "hausdorff": medpy.hd, "hd95": medpy.hd95}
    return {name: fn(label, kept) if np.sum(kept) else 0 for name, fn in fns.items()}


def test_distances_equal_medpy():
    for prob, label in pairs():
        pred = prob > 0.5
        if not pred.any() or not label.any():
            continue
        assert metrics.medpy_hd(pred, label) == pytest.approx(medpy.hd(pred, label), abs=1e-9)
        assert metrics.medpy_hd95(pred, label) == pytest.approx(medpy.hd95(pred, label), abs=1e-9)


def test_s3octa_protocol_equals_s3octas_code():
    data = pairs()
    per_image, summary = protocols.s3octa([p for p, _ in data], [t for _, t in data])
    expected = [s3octa_as_published(p, t) for p, t in data]
    for name in ("dice", "jaccard", "cldice", "hausdorff", "hd95"):
        np.testing.assert_allclose(per_image[name].numpy(), [e[name] for e in expected], rtol=0, atol=1e-9, err_msg=name)
        assert summary[name] == pytest.approx(np.mean([e[name] for e in expected]), abs=1e-9)
    # through evaluate(), on tensors
    probs = torch.from_numpy(np.stack([p for p, _ in data]))
    labels = torch.from_numpy(np.stack([t for _, t in data]))
    assert metrics.evaluate(probs, labels, protocol="s3octa")["dice"] == pytest.approx(summary["dice"], abs=1e-12)


def test_s3octa_small_components_rule_and_empty_prediction():
    mask = np.zeros((40, 40), bool)
    mask[2:4, 2:4] = True  # 4 px
    mask[10:30, 10:12] = True  # 40 px
    mask[35, 35] = True  # 1 px
    # areas 1, 4, 40: the 10th percentile is 1.6, so min(50, 1.6) keeps 4 and 40 and drops the speck
    assert protocols.remove_small_components(mask).sum() == 44
    assert protocols.remove_small_components(mask, min_area=5, min_percent=None).sum() == 40
    with pytest.raises(ValueError, match="min_area"):
        protocols.remove_small_components(mask, min_area=-1)
    with pytest.raises(ValueError, match="min_percent"):
        protocols.remove_small_components(mask, min_percent=120)
    said = []
    empty = protocols.s3octa([np.zeros((8, 8)), np.ones((8, 8))], [np.ones((8, 8), bool)] * 2, report=said.append)
    assert {k: v[0] for k, v in empty[0].items()} == dict.fromkeys(("dice", "jaccard", "cldice", "hausdorff", "hd95"), 0.0)
    # a 0 distance for an empty prediction is S3-OCTA's convention, so the report says so, with the count
    assert len(said) == 1 and said[0].startswith("1 of 2 predictions are empty") and "not a perfect one" in said[0]
    said.clear()
    protocols.s3octa([np.ones((8, 8))], [np.zeros((8, 8), bool)], report=said.append)
    assert len(said) == 1 and said[0].startswith("1 of 1 labels are empty")


def test_s3octa_field_resizes_label_and_prediction_nearest():
    prob, label = pairs(1, (152, 152))[0]
    ours = protocols.s3octa([prob], [label], field="3M")[0]
    big = lambda m: cv2.resize(m.astype(np.uint8), (304, 304), interpolation=cv2.INTER_NEAREST)  # noqa: E731
    expected = s3octa_as_published((big(prob > 0.8) > 0).astype(float), big(label))
    assert ours["dice"].item() == pytest.approx(expected["dice"], abs=1e-12)
    with pytest.raises(ValueError, match="field must be one of"):
        protocols.s3octa([prob], [label], field="9M")


def test_hd95_equals_monai():
    monai = pytest.importorskip("monai.metrics")
    for directed in (False, True):
        for percentile in (95, None, 50):
            for prob, label in pairs(8):
                pred = torch.from_numpy(prob > 0.5)
                target = torch.from_numpy(label)
                ours = metrics.hausdorff_distance(pred[None], target[None], percentile=percentile, directed=directed)
                theirs = monai.compute_hausdorff_distance(pred[None, None].float(), target[None, None].float(),
                                                          percentile=percentile, directed=directed)
                # MONAI computes its distances and their quantile in float32 (a few float32 ulps off);
                # ours are exact float64 (see test_hd95_is_exact_in_float64_and_nan_when_empty)
                np.testing.assert_allclose(ours.numpy(), theirs[:, 0].double().numpy(), rtol=2e-6, atol=0)


def test_hd95_is_exact_in_float64_and_nan_when_empty():
    a = vessel_mask(64, 80, seed=1).astype(bool)
    b = ndimage.binary_dilation(a, iterations=2)
    cross = ndimage.generate_binary_structure(2, 1)

    def surface(m):
        return m & ~ndimage.binary_erosion(m, cross, border_value=0)

    def directed(x, y):
        return ndimage.distance_transform_edt(~surface(y))[surface(x)]

    expected = max(np.percentile(directed(a, b), 95), np.percentile(directed(b, a), 95))
    assert metrics.hd95(torch.from_numpy(a)[None], torch.from_numpy(b)[None]).item() == pytest.approx(expected, abs=1e-12)
    assert torch.isnan(metrics.hd95(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))).all()  # as MONAI
    assert torch.isnan(metrics.hd95(torch.zeros(1, 8, 8), torch.ones(1, 8, 8))).all()
    with pytest.raises(ValueError, match="percentile"):
        metrics.hausdorff_distance(torch.ones(1, 4, 4), torch.ones(1, 4, 4), percentile=101)


def test_iternet_protocol_equals_iternets_evaluate():
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_curve, roc_auc_score

    data = pairs(6)
    fovs = [np.pad(np.ones((40, 48), bool), 4) for _ in data]
    probs = [np.round(p * 255) / 255 for p, _ in data]  # ties, as 8-bit prediction images have
    per_image, summary = protocols.iternet(probs, [t for _, t in data], fovs)
    y_true = np.concatenate([t[f] for (_, t), f in zip(data, fovs)]).astype(int)
    y_scores = np.concatenate([p[f] for p, f in zip(probs, fovs)])
    precision, recall, _ = precision_recall_curve(y_true, y_scores)
    y_pred = (y_scores >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred).ravel()
    expected = {"roc_auc": roc_auc_score(y_true, y_scores),
                "pr_auc": np.trapezoid(precision[::-1], recall[::-1]),
                "accuracy": (tp + tn) / (tp + tn + fp + fn), "specificity": tn / (tn + fp),
                "sensitivity": tp / (tp + fn), "precision": tp / (tp + fp), "f1": f1_score(y_true, y_pred)}
    for name, value in expected.items():
        assert summary[name] == pytest.approx(value, abs=1e-12), name
    assert per_image["roc_auc"].shape == (6,)


def test_retina_protocol_is_ours():
    data = pairs(4)
    probs = torch.from_numpy(np.stack([p for p, _ in data]))
    labels = torch.from_numpy(np.stack([t for _, t in data]))
    summary = metrics.evaluate(probs, labels, protocol="retina")
    hard = probs > 0.5
    assert summary["cldice"] == pytest.approx(metrics.cldice(hard, labels).mean().item())
    assert summary["hd95"] == pytest.approx(metrics.hd95(hard, labels).mean().item())
    assert {"dice", "betti0_error", "betti1_error"} <= set(summary)
    with pytest.raises(ValueError, match="threshold must be a number in"):
        metrics.evaluate(probs, labels, threshold=1.5)
    with pytest.raises(ValueError, match="field applies to the s3octa protocol only"):
        metrics.evaluate(probs, labels, protocol="iternet", field="3M")


def test_retina_protocol_counts_what_its_means_leave_out(recwarn):
    """An empty prediction has no HD95 (MONAI's NaN): the mean is over the others, and the report says how
    many it left out and how many predictions were empty; all undefined gives NaN without numpy's warning."""
    label = vessel_mask(32, 32, seed=3).astype(bool)
    probs, labels = [label * 0.9, np.zeros((32, 32)), np.zeros((32, 32))], [label] * 3
    said = []
    per_image, summary = protocols.retina(probs, labels, report=said.append)
    assert np.isnan(per_image["hd95"][1:]).all() and summary["hd95"] == 0.0 and summary["dice"] == pytest.approx(1 / 3)
    assert said == ["2 of 3 predictions are empty (nothing > 0.5): their recall, dice and cldice are 0 against a "
                    "non-empty label, their precision 1 (no false positive)",
                    "hd95 is undefined (NaN) for 2 of 3 images, whose prediction or label is empty; its mean is over "
                    "the other 1"]
    said.clear()
    assert np.isnan(protocols.retina(probs[1:], labels[1:], report=said.append)[1]["hd95"])
    assert said[-1] == "hd95 is undefined (NaN) for every image: each has an empty prediction or label"
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_biomarkers_measure_the_mask_the_protocol_scores():
    """A pixel exactly at the threshold is out for s3octa and retina (prob > t, as `retina predict`) and in
    for iternet (prob >= t, as its code): --biomarkers measures the same mask."""
    label = np.zeros((1, 24, 24), bool)
    label[0, 4:20, 10:13] = True
    prob = torch.from_numpy(label * 0.9)
    prob[0, 2, 2] = 0.5  # a speck at exactly the threshold
    areas = {}
    for protocol in ("retina", "iternet"):
        summary = metrics.evaluate(prob, torch.from_numpy(label), protocol=protocol, threshold=0.5, biomarkers=True)
        areas[protocol] = summary["pred_vessel_area_density"] * 24 * 24
    assert areas == {"retina": pytest.approx(48), "iternet": pytest.approx(49)}


def test_classes_protocol_pools_like_iou_per_class_and_scores_each_image(tmp_path, capsys):
    """Class maps (OCT layers): pooled IoU per class is `iou_per_class`'s; per image, hand-counted Dice and
    IoU; folders of 8-bit index maps (a multi-class model's prob/) through `retina evaluate`."""
    rng = np.random.default_rng(3)
    preds = torch.from_numpy(rng.integers(0, 4, (3, 9, 11)))
    labels = torch.from_numpy(rng.integers(0, 3, (3, 9, 11)))  # class 3 only predicted
    said = []
    per_image, summary = protocols.classes(list(preds.numpy()), list(labels.numpy()), report=said.append)
    assert said == ["4 classes (the largest index found + 1; set num_classes / --classes to fix it)"]
    pooled = metrics.iou_per_class(preds, labels, 4)
    for c in range(4):
        assert summary[f"iou_{c}"] == pytest.approx(float(pooled[c]), abs=1e-12)
    assert summary["iou_3"] == 0.0 and summary["miou"] == pytest.approx(float(metrics.mean_iou(preds, labels, 4)))
    assert summary["miou_foreground"] == pytest.approx(float(pooled[1:].mean()))
    assert summary["pixel_accuracy"] == pytest.approx(float((preds == labels).double().mean()))
    p, t = preds[1].numpy(), labels[1].numpy()
    for c in range(4):
        both, sizes = np.sum((p == c) & (t == c)), np.sum(p == c) + np.sum(t == c)
        assert float(per_image[f"dice_{c}"][1]) == pytest.approx(2 * both / sizes)
        assert float(per_image[f"iou_{c}"][1]) == pytest.approx(both / (sizes - both))
    absent = protocols.classes([np.zeros((4, 4), np.int64)], [np.zeros((4, 4), np.int64)], 3)[0]
    assert np.isnan(float(absent["iou_2"][0])) and float(absent["miou"][0]) == 1.0  # a class in neither map: NaN
    with pytest.raises(ValueError, match=r"class indices outside \[0, 3\)"):
        protocols.classes(list(preds.numpy()), list(labels.numpy()), 3)

    from retina import io
    from retina.cli import main

    for i in range(3):
        io.write_image(tmp_path / "pred" / f"{i}.png", preds[i].numpy().astype(np.uint8))
        io.write_image(tmp_path / "label" / f"{i}.png", labels[i].numpy().astype(np.uint8))
    from_files = metrics.evaluate(tmp_path / "pred", tmp_path / "label", protocol="classes", num_classes=4)
    assert from_files == pytest.approx(summary, nan_ok=True)
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "label"), "--protocol", "classes", "--classes", "4",
                 "--out", str(tmp_path / "ev")]) == 0
    assert f"miou: {summary['miou']:.4f}" in capsys.readouterr().out
    header = (tmp_path / "ev" / "per_image.csv").read_text().splitlines()[0]
    assert header.startswith("id,pixel_accuracy,miou,mdice,iou_0")
    for bad, message in (({"threshold": 0.5}, "threshold does not apply"), ({"biomarkers": True}, "biomarkers do not"),
                         ({"num_classes": 0}, "num_classes must be an integer >= 1")):
        with pytest.raises(ValueError, match=message):
            metrics.evaluate(preds, labels, protocol="classes", **bad)
    with pytest.raises(TypeError, match="pred must be integer class indices"):
        metrics.evaluate(preds.float(), labels, protocol="classes")
    with pytest.raises(ValueError, match="num_classes applies to the classes protocol only"):
        metrics.evaluate(preds.float() / 4, labels.bool(), num_classes=3)


def test_overlap_scores_equal_monai_with_ignore_empty_false():
    """scores_from_confusion names MONAI's convention for empty masks (ignore_empty=False): check it."""
    monai = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(1)
    pred = torch.from_numpy(rng.random((4, 1, 12, 12)) < 0.4)
    target = torch.from_numpy(rng.random((4, 1, 12, 12)) < 0.4)
    pred[1], target[1] = False, False  # both empty: 1 in both conventions
    pred[2] = False  # prediction empty, label not: 0
    scores = metrics.overlap_scores(pred, target)
    dice = monai.compute_dice(pred.float(), target.float(), ignore_empty=False)[:, 0]
    iou = monai.compute_iou(pred.float(), target.float(), ignore_empty=False)[:, 0]
    np.testing.assert_allclose(scores["dice"].numpy(), dice.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(scores["jaccard"].numpy(), iou.double().numpy(), rtol=1e-6)
