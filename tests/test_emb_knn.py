"""emb-knn specifics: classes from names, the neighbour score by hand, leave-one-out training
scores, per-machine shares of a joint model, the loss heads, and joint training into a run."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_emb_knn_settings

from asdcli.detectors.emb_knn import EmbKNNDetector
from asdcli.detectors.emb_knn.heads import ArcFaceHead, SubClusterAdaCosHead
from asdcli.detectors.emb_knn.tasks import class_keys, freq_shift, pretext, time_stretch
from asdcli.detectors.params import TrainParams
from asdcli.detectors.windows import WindowSet
from asdcli.featurize import featurize
from asdcli.naming import ClipInfo
from asdcli.train import train

N_MELS = 16
SMALL = {"frames": 16, "channels": [4, 8], "embedding": 8, "source_means": 0}
TRAIN = TrainParams(epochs=2, batch_size=16, val_split=0.2, seed=0, device="cpu")


def info(machine="fan", section="00", domain="source", **attrs) -> ClipInfo:
    return ClipInfo(name="x.wav", machine=machine, section=section, domain=domain, attributes=attrs)


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_classes_come_from_machine_section_and_attributes():
    clips = [info(vel="1"), info(vel="2"), info(machine="pump", section="01")]
    assert class_keys(clips, "attributes") == ["fan|00|vel=1", "fan|00|vel=2", "pump|01"]
    assert class_keys(clips, "section") == ["fan|00", "fan|00", "pump|01"]
    # One class only: the domain is added so there is something to learn...
    one = [info(), info(domain="target")]
    assert class_keys(one, "section") == ["fan|00|source", "fan|00|target"]
    # ...and with nothing to tell apart and no self-supervised task, fit refuses with a reason.
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(N_MELS, 20)).astype(np.float32) for _ in range(4)]
    with pytest.raises(ValueError, match="at least two classes"):
        EmbKNNDetector({**SMALL, "self_supervised": "none"}, TRAIN).fit(
            feats, [info() for _ in feats]
        )


def hand_detector(k: int = 1) -> EmbKNNDetector:
    """A detector whose banks are set by hand (2-d embeddings), no network needed."""
    det = EmbKNNDetector({**SMALL, "k": k}, TRAIN)
    det.groups_ = ["fan|00|source", "fan|00|target", "pump|00|source"]
    det.bank_scale_ = np.ones(3)
    det.bank_ = np.stack([unit(1, 0), unit(1, 1), unit(0, 1), unit(-1, 0)])
    det.bank_group_ = np.array([0, 0, 1, 2])
    return det


def test_score_is_the_smaller_of_source_and_target_cosine_distances():
    det = hand_detector()
    q = np.stack([unit(0, 1), unit(1, 0), unit(-1, 0)])
    scores = det._knn(q, [info(), info(), info()])
    # (0,1): source nearest is (1,1)/sqrt2 -> 1 - 0.7071; target is (0,1) itself -> 0.
    # (1,0): source (1,0) -> 0. (-1,0): source best (1,1) -> 1 + 0.7071; target (0,1) -> 1.
    np.testing.assert_allclose(scores, [0.0, 0.0, 1.0], atol=1e-6)
    # k = 2 averages the two nearest of a bank (a one-member bank uses what it has).
    det2 = hand_detector(k=2)
    s = det2._knn(unit(1, 0)[None], [info()])
    np.testing.assert_allclose(s, [min(1 - (1 + np.sqrt(0.5)) / 2, 1 - 0.0)], atol=1e-6)


def test_clips_are_compared_with_their_own_machine_and_section_only():
    det = hand_detector()
    q = unit(-1, 0)[None]
    # The pump bank holds (-1, 0) exactly, but a fan clip never looks at it.
    np.testing.assert_allclose(det._knn(q, [info()]), [1.0], atol=1e-6)
    np.testing.assert_allclose(det._knn(q, [info(machine="pump")]), [0.0], atol=1e-6)
    # Unknown section: every section of the machine; unknown machine: every bank.
    np.testing.assert_allclose(det._knn(q, [info(section="07")]), [1.0], atol=1e-6)
    np.testing.assert_allclose(det._knn(q, [ClipInfo(name="a.wav")]), [0.0], atol=1e-6)


def test_restrict_keeps_one_machines_banks_and_training_scores():
    det = hand_detector()
    det.train_scores_ = np.array([0.1, 0.2, 0.3, 0.4])
    sub = det.restrict("fan", np.array([True, True, True, False]))
    assert sub.groups_ == ["fan|00|source", "fan|00|target"]
    assert sub.bank_.shape == (3, 2) and sub.bank_group_.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(sub.train_scores_, [0.1, 0.2, 0.3])
    assert det.bank_.shape == (4, 2)  # the original is untouched
    with pytest.raises(ValueError, match="no training clips of 'valve'"):
        det.restrict("valve", np.zeros(4, bool))


def clip(rng, shift=0.0, anomaly=False, frames=24):
    t = np.arange(frames)
    x = (
        -50
        + 10 * np.cos(np.linspace(0, 3 * np.pi, N_MELS))[:, None]
        + rng.normal(0, 1, (N_MELS, frames))
    )
    x[3 + int(shift)] += 6 * np.sin(t / 2)
    if anomaly:
        x[8:14] += 15 * (np.sin(t / 3) > 0)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    feats, infos = [], []
    for i in range(24):
        vel = str(i % 3)
        domain = "target" if i % 6 == 5 else "source"
        feats.append(clip(rng, shift=int(vel) * 3 + (2 if domain == "target" else 0)))
        infos.append(info(domain=domain, vel=vel))
    det = EmbKNNDetector({**SMALL, "oversample_target": 3}, TRAIN).fit(feats, infos)
    return det, feats, infos


def test_training_scores_leave_each_clip_out(fitted):
    det, feats, infos = fitted
    assert (det.train_scores_ > 1e-6).all()  # nobody is its own neighbour
    emb = det.embed(det._windows_of(feats))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    i = 0  # a source clip: nearest other source clip, or nearest target clip
    sims = emb @ emb[i]
    sims[i] = -np.inf
    domains = np.array([c.domain for c in infos])
    expected = min(1 - sims[domains == d].max() for d in ("source", "target"))
    assert det.train_scores_[i] == pytest.approx(expected, abs=1e-5)
    # Test-time scoring of a training clip finds itself: distance 0.
    assert det.score([feats[i]], [infos[i]])[0] == pytest.approx(0.0, abs=1e-5)


def test_oversampling_adds_unit_points_to_target_banks_only(fitted):
    det, feats, _ = fitted
    n_real = len(feats)
    extra = det.bank_group_[n_real:]
    assert len(extra) == 3 and {det.groups_[g] for g in extra} == {"fan|00|target"}
    np.testing.assert_allclose(np.linalg.norm(det.bank_[n_real:], axis=1), 1.0, rtol=1e-5)


def test_anomalies_score_higher(fitted):
    det, _, _ = fitted
    rng = np.random.default_rng(5)
    normal = [clip(rng, shift=3) for _ in range(6)]
    bad = [clip(rng, shift=3, anomaly=True) for _ in range(6)]
    s = det.score(normal + bad, [info(vel="1")] * 12)
    assert s[6:].min() > s[:6].max()


def test_arcface_loss_by_hand():
    torch.manual_seed(0)
    head = ArcFaceHead(embedding=2, n_classes=2, margin=0.3, scale=4.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor([[np.cos(0.5), np.sin(0.5)]], dtype=torch.float32)  # 0.5 rad from class 0
    target = torch.tensor([[1.0, 0.0]])
    logits = torch.tensor([[4 * np.cos(0.5 + 0.3), 4 * np.cos(np.pi / 2 - 0.5)]])
    expected = F.cross_entropy(logits.float(), torch.tensor([0]))
    assert head(emb, target).item() == pytest.approx(expected.item(), rel=1e-5)
    # Mixup targets: the loss is the weighted sum, each class with its margin.
    half = torch.tensor([[0.5, 0.5]])
    logits2 = torch.tensor([[4 * np.cos(0.5 + 0.3), 4 * np.cos(np.pi / 2 - 0.5 + 0.3)]]).float()
    expected2 = -(half * F.log_softmax(logits2, dim=1)).sum()
    assert head(emb, half).item() == pytest.approx(expected2.item(), rel=1e-5)


def test_adacos_scale_adapts_and_class_cosine_is_the_best_centre():
    torch.manual_seed(0)
    head = SubClusterAdaCosHead(embedding=4, n_classes=3, sub_clusters=2)
    start = float(head.scale)
    assert start == pytest.approx(np.sqrt(2) * np.log(2))
    emb = torch.randn(8, 4)
    targets = F.one_hot(torch.arange(8) % 3, 3).float()
    head.train()
    loss = head(emb, targets)
    assert torch.isfinite(loss) and float(head.scale) != start
    cos = F.normalize(emb) @ F.normalize(head.weight).T
    np.testing.assert_allclose(
        head.cosines(emb).detach(), cos.view(8, 3, 2).max(dim=2).values.detach(), rtol=1e-6
    )
    head.eval()
    before = float(head.scale)
    head(emb, targets)
    assert float(head.scale) == before  # evaluation never changes the scale


def test_emb_knn_default_augmentation_is_on_and_can_be_turned_off():
    assert EmbKNNDetector().augmentation() == {"mixup": 1.0, "time_mask": 8, "freq_mask": 8}
    off = EmbKNNDetector(None, TrainParams(mixup=0, time_mask=0, freq_mask=0))
    assert off.augmentation() == {"mixup": 0, "time_mask": 0, "freq_mask": 0}


def test_joint_training_writes_one_model_per_machine(dataset, tmp_path):
    settings = tiny_emb_knn_settings(tmp_path)
    featurize([dataset], settings.features, settings.paths.store)
    events = []
    result = train(settings, "emb-knn", progress=lambda m, e: events.append((m, e.get("event"))))
    run = result.run.path
    assert ("all", "start") in events and ("fan", "done") in events
    for machine in ("bearing", "fan"):
        banks = json.loads((run / "models" / machine / "banks.json").read_text())
        assert {g.split("|")[0] for g in banks["groups"]} == {machine}
        assert len(banks["classes"]) == 6  # 2 machines x 3 "vel" values, both in every model
    history = list(csv.DictReader((run / "history.csv").read_text().splitlines()))
    assert {r["machine"] for r in history} == {"all"} and len(history) == 2
    scores = list(csv.DictReader((run / "train_scores.csv").read_text().splitlines()))
    assert sorted({r["machine"] for r in scores}) == ["bearing", "fan"] and len(scores) == 12
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert set(thresholds) == {"bearing", "fan"}


def test_source_means_replace_the_source_bank_by_unit_centres(fitted):
    det, feats, infos = fitted
    km = EmbKNNDetector({**SMALL, "source_means": 4}, TRAIN).fit(feats, infos)
    source = [i for i, g in enumerate(km.groups_) if g.endswith("|source")]
    target = [i for i, g in enumerate(km.groups_) if g.endswith("|target")]
    assert np.isin(km.bank_group_, source).sum() == 4
    assert np.isin(km.bank_group_, target).sum() == sum(c.domain == "target" for c in infos)
    np.testing.assert_allclose(np.linalg.norm(km.bank_, axis=1), 1.0, rtol=1e-5)
    # Target clips still leave themselves out; source clips are scored against the centres.
    emb = km.embed(km._windows_of(feats))
    centres = km.bank_[np.isin(km.bank_group_, source)]
    targets = emb[[c.domain == "target" for c in infos]]
    i = 0  # a source clip
    expected = min(1 - (centres @ emb[i]).max(), 1 - (targets @ emb[i]).max())
    assert km.train_scores_[i] == pytest.approx(expected, abs=1e-5)


def test_density_norm_divides_by_each_banks_own_neighbour_distance():
    det = EmbKNNDetector({**SMALL, "density_norm": True}, TRAIN)
    det.groups_ = ["fan|00|source", "fan|00|target", "fan|01|source"]
    a = np.deg2rad([0, 10, 20])  # source: neighbours 10 degrees apart
    b = np.deg2rad([90, 130])  # target: 40 degrees apart
    emb = np.stack([unit(np.cos(t), np.sin(t)) for t in [*a, *b, 3.0]])
    group_of = np.array([0, 0, 0, 1, 1, 2])  # section 01 has a single clip
    scales = det._bank_scales(emb, group_of)
    d10, d40 = 1 - np.cos(np.deg2rad(10)), 1 - np.cos(np.deg2rad(40))
    np.testing.assert_allclose(scales, [d10, d40, (d10 + d40) / 2], rtol=1e-5)  # float32 unit()
    # Without density_norm every scale is 1.
    plain = EmbKNNDetector(SMALL, TRAIN)
    plain.groups_ = det.groups_
    assert plain._bank_scales(emb, group_of).tolist() == [1, 1, 1]
    det.bank_, det.bank_group_, det.bank_scale_ = emb[:5], group_of[:5], scales
    q = unit(np.cos(np.deg2rad(60)), np.sin(np.deg2rad(60)))[None]
    # 40 degrees from the source bank, 30 from the target bank, each over its own scale.
    expected = min((1 - np.cos(np.deg2rad(40))) / d10, (1 - np.cos(np.deg2rad(30))) / d40)
    np.testing.assert_allclose(det._knn(q, [info()]), [expected], rtol=1e-5)


def test_statistics_exposure_swaps_band_means_and_labels_the_exposed_twin_class():
    det = EmbKNNDetector({**SMALL, "exposure": 0.5}, TRAIN)
    det.classes_ = ["a", "b", "c"]
    det._labels = torch.tensor([0, 1, 2, 1])
    det.device_ = torch.device("cpu")
    det._aug_rng = np.random.default_rng(0)
    assert det._n_outputs() == 6
    torch.manual_seed(0)
    windows = torch.randn(4, 5, 7) + torch.arange(4.0)[:, None, None] * 10
    targets = det._targets(np.arange(4))
    exposed, new = det._expose(windows, targets)
    changed = [i for i in range(4) if not torch.equal(exposed[i], windows[i])]
    assert len(changed) == 2
    means = windows.mean(dim=2)
    for i in range(4):
        label = int(det._labels[i])
        if i in changed:
            # Its own time structure, somebody else's band means (one of the 4 windows).
            torch.testing.assert_close(
                exposed[i] - exposed[i].mean(dim=1, keepdim=True),
                windows[i] - windows[i].mean(dim=1, keepdim=True),
            )
            got = exposed[i].mean(dim=1)
            assert any(torch.allclose(got, means[j], atol=1e-5) for j in range(4))
            assert new[i].argmax() == label + 3 and new[i].sum() == 1
        else:
            assert new[i].argmax() == label


# --- one machine type without attributes: the self-supervised task ----------------------------


def test_frequency_shift_is_circular_and_time_stretch_interpolates_about_the_centre():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6)  # (B, n_mels, T)
    out = freq_shift(x, torch.tensor([1, -2]))
    torch.testing.assert_close(out[0], x[0][[3, 0, 1, 2]])  # band m shows band m - 1
    torch.testing.assert_close(out[1], x[1][[2, 3, 0, 1]])  # band m shows band m + 2
    assert torch.equal(freq_shift(x, torch.tensor([0, 0])), x)
    assert torch.equal(time_stretch(x, torch.tensor([1.0, 1.0])), x)  # exactly unchanged
    ramp = torch.arange(8, dtype=torch.float32).expand(1, 3, 8)  # value = frame index
    # Half speed about the centre c = 3.5: frame t shows position 3.5 + (t - 3.5) / 2.
    slow = time_stretch(ramp, torch.tensor([0.5]))
    torch.testing.assert_close(slow[0, 0], 3.5 + (torch.arange(8.0) - 3.5) / 2)
    # Double speed reads past both ends, circularly: position -3.5 is 4.5, 11.5 is 3.5.
    fast = time_stretch(ramp, torch.tensor([2.0]))
    pos = torch.remainder(3.5 + (torch.arange(8.0) - 3.5) * 2, 8)
    lo, w = pos.floor(), pos - pos.floor()
    torch.testing.assert_close(fast[0, 0], lo * (1 - w) + ((lo + 1) % 8) * w)


def test_pretext_tasks_and_their_class_names():
    shift = pretext("shift", 128)
    assert shift is not None and shift.shifts == (0, -2, 2, -4, 4)  # steps of 128 / 64 bands
    assert shift.names[0] == "shift=+0" and set(shift.rates) == {1.0}
    assert pretext("shift", 32).shifts == (0, -1, 1, -2, 2)  # at least one band per step
    both = pretext("shift_stretch", 64)
    assert both is not None and len(both) == 15
    assert (both.shifts[0], both.rates[0]) == (0, 1.0)  # class 0 is the window as recorded
    assert len(set(zip(both.shifts, both.rates, strict=True))) == 15
    assert pretext("none", 128) is None and pretext("exposure", 128) is None


def single_machine(n: int = 10, seed: int = 0) -> tuple[list[np.ndarray], list[ClipInfo]]:
    """One machine type, one section, one domain, no attributes: nothing in the names."""
    rng = np.random.default_rng(seed)
    return [clip(rng, frames=40) for _ in range(n)], [info() for _ in range(n)]


def test_one_machine_without_attributes_trains_on_the_shift_task_and_scores_spread():
    feats, infos = single_machine()
    det = EmbKNNDetector(SMALL, TRAIN).fit(feats, infos)  # self_supervised=auto: no refusal
    assert det.classes_ == [f"fan|00|source|shift={s:+d}" for s in (0, -1, 1, -2, 2)]
    assert det.train_scores_.std() > 1e-4
    rng = np.random.default_rng(9)
    test = [clip(rng, frames=40) for _ in range(4)] + [
        clip(rng, frames=40, anomaly=True) for _ in range(4)
    ]
    scores = det.score(test, [info()] * 8)
    assert np.isfinite(scores).all() and scores.std() > 1e-4  # not collapsed to one point


def test_names_that_tell_clips_apart_need_no_self_supervised_task(fitted):
    det, _, _ = fitted
    assert det.classes_ == ["fan|00|vel=0", "fan|00|vel=1", "fan|00|vel=2"]
    feats, infos = single_machine(6)
    chosen = EmbKNNDetector({**SMALL, "self_supervised": "stretch"}, TRAIN).fit(feats, infos)
    assert chosen.classes_ == [f"fan|00|source|stretch={r:g}" for r in (1, 0.8, 1.25)]
    exposure = EmbKNNDetector({**SMALL, "self_supervised": "exposure"}, TRAIN).fit(feats, infos)
    assert exposure.classes_ == ["fan|00|source"] and exposure._n_outputs() == 2
    with pytest.raises(ValueError, match="at least two classes"):
        EmbKNNDetector({**SMALL, "self_supervised": "exposure", "exposure": 0}, TRAIN).fit(
            feats, infos
        )


class _Recorder(torch.nn.Module):
    """Stands in for the network (keeps its input, passes it on) or the head (keeps the
    targets, returns a zero loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(x if targets is None else targets)
        return x if targets is None else x.sum() * 0


def test_each_window_is_transformed_as_its_target_class_says():
    train = TrainParams(device="cpu", mixup=0, time_mask=0, freq_mask=0)
    det = EmbKNNDetector({**SMALL, "exposure": 0, "self_supervised": "shift"}, train)
    feats, infos = single_machine(3)
    infos[2] = info(section="01")  # two name classes: 0 and 1 (x 5 shifts)
    det.n_mels_, det.device_ = N_MELS, torch.device("cpu")
    det._build_head(infos)
    assert det._labels.tolist() == [0, 0, 5]
    det._aug_rng = np.random.default_rng(0)
    det.module_, det._head = _Recorder(), _Recorder()
    ws = WindowSet(feats, 16, 8, ids=np.arange(3))
    idx = np.arange(len(ws))
    det._batch_loss(ws, idx)
    inputs, targets = det.module_.seen[0][:, 0], det._head.seen[0]
    assert det._pretext is not None
    for i, (window, target) in enumerate(zip(inputs, targets, strict=True)):
        label = int(det._labels[ws.ids_of(idx)[i]])
        t = int(target.argmax()) - label
        assert target.sum() == 1 and 0 <= t < 5
        shift = torch.tensor([det._pretext.shifts[t]])
        torch.testing.assert_close(
            window, freq_shift(torch.from_numpy(ws.gather(idx[i : i + 1])), shift)[0]
        )
    assert len({int(t.argmax()) for t in targets}) > 2  # several shifts were drawn
    # Validation: window i is shifted as class i mod 5, every time.
    det._val_loss(ws)
    inputs, targets = det.module_.seen[1][:, 0], det._head.seen[1]
    labels = det._labels[ws.ids_of(idx)]
    assert (targets.argmax(dim=1) - labels).tolist() == [i % 5 for i in idx]
    shifts = torch.tensor([det._pretext.shifts[i % 5] for i in idx])
    torch.testing.assert_close(inputs, freq_shift(torch.from_numpy(ws.gather(idx)), shifts))


def test_small_batch_norm_on_one_thread_matches_batch_norm():
    from torch import nn

    from asdcli.detectors.emb_knn.network import SmallBatchNorm2d

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the one-thread path is taken only with more threads
    try:
        x = torch.randn(6, 4, 10, 8).contiguous(memory_format=torch.channels_last) * 3 + 1
        ref, small = nn.BatchNorm2d(4), SmallBatchNorm2d(4)
        small.load_state_dict(ref.state_dict())
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2)
            small.weight.copy_(ref.weight)
        xr, xs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        g = torch.randn_like(x)
        ref(xr).backward(g)
        out = small(xs)
        out.backward(g)
        torch.testing.assert_close(out, ref(x.clone()).detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(small.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(small.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)
        # running statistics: one update each here; ref has had two (the extra forward above)
        assert small.num_batches_tracked.item() == 1 and ref.num_batches_tracked.item() == 2
        fresh = nn.BatchNorm2d(4)
        fresh(x)
        torch.testing.assert_close(small.running_mean, fresh.running_mean)
        torch.testing.assert_close(small.running_var, fresh.running_var)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(threads)


def test_network_pools_before_its_second_relu_with_the_same_outputs_and_gradients():
    """The blocks run conv, BN, ReLU, conv, BN, pool, ReLU (in-place ReLUs): exactly what
    conv, BN, ReLU, conv, BN, ReLU, pool computes, with the same state_dict keys (saved runs
    load), on an odd size (ceil-mode pooling) and with ties and negative windows."""
    from torch import nn

    from asdcli.detectors.emb_knn.network import EmbeddingNet

    torch.manual_seed(0)
    net = EmbeddingNet(n_mels=13, channels=[4, 8], embedding=6)
    net = net.to(memory_format=torch.channels_last)
    layers = list(net.features)
    kinds = [type(m).__name__ for m in layers[:7]]
    assert kinds[5:7] == ["MaxPool2d", "ReLU"] and layers[6].inplace
    reference = copy.deepcopy(net)
    plain = []
    for i in range(0, len(layers), 7):  # the textbook order: ReLU, then pool
        block = [copy.deepcopy(m) for m in layers[i : i + 7]]
        block[5], block[6] = nn.ReLU(), block[5]
        plain += block
    reference.features = nn.Sequential(*plain)
    reference.load_state_dict(net.state_dict())  # same keys: it loads strictly
    x = torch.randn(5, 1, 13, 11)
    x[:, :, :4] = 0.5  # constant regions: ties in the pooling windows
    x = x.contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for model in (net, reference):
        model.train()
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    for a, b in zip(net.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # running statistics too


@pytest.mark.parametrize(("channels", "width"), [(8, 64), (4, 10), (3, 2)])
def test_first_conv_over_frame_pairs_is_the_convolution(monkeypatch, channels: int, width: int):
    """FirstConv computes its 1-channel 3x3 convolution as a 2-channel one over pairs of
    frames: the same outputs and weight gradient as nn.Conv2d with its state_dict (edges
    included), and the paired convolution is what runs."""
    from torch import nn

    from asdcli.detectors.emb_knn.network import FirstConv

    torch.manual_seed(channels)
    plain = nn.Conv2d(1, channels, 3, padding=1, bias=False)
    paired = FirstConv(channels)
    paired.load_state_dict(plain.state_dict())  # strictly: the same keys and shapes
    seen: list[tuple[int, ...]] = []
    conv2d = F.conv2d
    monkeypatch.setattr(
        F, "conv2d", lambda x, *a, **k: seen.append(tuple(x.shape)) or conv2d(x, *a, **k)
    )
    x = torch.randn(3, 1, 7, width).contiguous(memory_format=torch.channels_last)
    out = paired(x)
    assert seen == [(3, 2, 7, width // 2)]
    expected = conv2d(x, plain.weight, padding=1)
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(expected)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(paired.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)


def test_first_conv_falls_back_on_odd_widths_and_strided_inputs(monkeypatch):
    from torch import nn

    from asdcli.detectors.emb_knn.network import FirstConv

    paired = FirstConv(4)
    plain = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    plain.load_state_dict(paired.state_dict())
    seen: list[int] = []
    conv2d = F.conv2d
    monkeypatch.setattr(
        F, "conv2d", lambda x, *a, **k: seen.append(x.shape[1]) or conv2d(x, *a, **k)
    )
    odd = torch.randn(2, 1, 5, 9)
    strided = torch.randn(2, 1, 5, 16)[:, :, :, ::2]  # even width, not channels-last dense
    for x in (odd, strided):
        torch.testing.assert_close(paired(x), conv2d(x, plain.weight, padding=1))
    assert seen == [1, 1]
