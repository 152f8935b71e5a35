"""plan_memory: the largest patch, then the largest batch, that fit the budget by (injected) measurement,
the fastest setting first; gradient accumulation makes up the requested batch; the trainer's patch=auto
applies the plan and a resumed run keeps it."""

import pytest

import retina
from retina.losses import DiceLoss
from retina.train import TrainConfig, Trainer, read_checkpoint
from retina.train import memory_plan as memory_plan_module
from retina.train.memory_plan import plan_memory


def fake_peak(patch: int, batch: int, checkpointing: bool, amp) -> int:
    """bytes that grow with the pixels of a batch; checkpointing keeps 40%, bfloat16 60%"""
    per_pixel = 400 * (0.4 if checkpointing else 1.0) * (0.6 if amp else 1.0)
    return int(patch * patch * batch * per_pixel) + 1_000_000


def model():
    return retina.models.create("unet", in_channels=1, width=4, depth=2)


def test_plan_takes_the_largest_patch_and_batch_within_the_budget():
    calls = []

    def measure(*args):
        calls.append(args)
        return fake_peak(*args)

    # 512², one image: 105.9 MB float32, 63.9 MB bfloat16, 42.9 MB checkpointed (fits); two: 84.9 MB
    budget = 60_000_000
    plan = plan_memory(model(), DiceLoss(sigmoid=True), in_channels=1, budget=budget, batch_size=8, measure=measure,
                       max_patch=512, device="cpu")
    assert calls == [(512, 1, False, None), (512, 1, False, "bfloat16"), (512, 1, True, None), (512, 2, True, None)]
    assert (plan.patch, plan.batch_size, plan.accumulate, plan.checkpointing, plan.amp) == (512, 1, 8, True, None)
    assert plan.peak == fake_peak(512, 1, True, None) <= budget == plan.budget
    roomy = plan_memory(model(), DiceLoss(), in_channels=1, budget="1GiB", batch_size=6, measure=fake_peak, device="cpu")
    assert (roomy.patch, roomy.batch_size, roomy.accumulate, roomy.checkpointing) == (512, 4, 2, False)
    assert roomy.peak == fake_peak(512, 4, False, None)  # 8 would exceed the 6 asked for
    limited = plan_memory(model(), DiceLoss(), in_channels=1, budget=500_000_000, batch_size=8, measure=fake_peak,
                          device="cpu")
    assert (limited.batch_size, limited.accumulate) == (4, 2)  # 8 images would need 840 MB
    assert "patch 512, batch 4 x 2 accumulated" in str(roomy)


def test_plan_falls_back_to_leaner_settings_and_smaller_patches():
    tight = plan_memory(model(), DiceLoss(), in_channels=1, budget=fake_peak(256, 1, True, None), batch_size=2,
                        measure=fake_peak, device="cpu")
    assert tight.patch == 256 and tight.checkpointing and tight.amp is None  # 512 would not fit at all
    assert tight.batch_size == 1 and tight.accumulate == 2
    no_amp = plan_memory(model(), DiceLoss(), in_channels=1, budget=fake_peak(512, 1, False, "bfloat16"),
                         measure=fake_peak, allow_amp=False, device="cpu")
    assert no_amp.amp is None and no_amp.checkpointing and no_amp.patch == 512
    with pytest.raises(MemoryError, match="no patch of 64 or more trains within"):
        plan_memory(model(), DiceLoss(), in_channels=1, budget=1000, measure=fake_peak, device="cpu")
    with pytest.raises(ValueError, match="CUDA device"):
        plan_memory(model(), DiceLoss(sigmoid=True), in_channels=1, budget="1GiB", device="cpu", max_patch=64)


def test_trainer_patch_auto_applies_the_plan_and_resume_keeps_it(tmp_path, monkeypatch):
    seen = []

    def measured(model, loss, in_channels, device, patch, batch, checkpointing, amp):
        seen.append(patch)
        return fake_peak(patch, batch, checkpointing, amp)

    monkeypatch.setattr(memory_plan_module, "training_step_peak", measured)
    config = TrainConfig.from_dict({
        "model": {"name": "unet", "kwargs": {"in_channels": 1, "width": 4, "depth": 2}},
        "loss": {"name": "DiceLoss", "kwargs": {"sigmoid": True}},
        "data": {"train": {"name": "SyntheticOCTA", "kwargs": {"length": 8, "size": 96, "channels": 1}},
                 "patch": "auto", "batch_size": 4},
        "training": {"steps": 2, "memory_budget": str(fake_peak(64, 2, True, None)), "checkpoint_every": 1},
        "logging": {"progress": False, "tensorboard": False},
    })
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.plan.patch == 64 and trainer.plan.batch_size == 2 and trainer.plan.accumulate == 2
    assert trainer.model.checkpointing and trainer.config.data.patch == 64
    trainer.fit()
    state = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["plan"]["patch"] == 64 and state["config"]["data"]["patch"] == "auto"
    assert (tmp_path / "run" / "config.yaml").read_text().count("patch: auto") == 1
    seen.clear()
    resumed = Trainer(config, tmp_path / "run", resume=True)
    assert not seen and resumed.plan == trainer.plan  # no new measurement: the run goes on as it began
    assert trainer.train_set[0]["image"].shape[-1] == 64
    with pytest.raises(retina.train.ConfigError, match="training.memory_budget"):
        TrainConfig.from_dict({"training": {"memory_budget": "lots"}}).validate()
