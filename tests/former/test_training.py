"""The training API: it learns, it resumes where it stopped, it saves and predicts, it shards;
the generator trains through the same loop, samples from a prompt, leaks without its mask."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from former.classifier import (
    ClassifierConfig,
    RunMismatchError,
    build_classifier,
    class_probabilities,
    classifier_for,
    ensemble_accuracy,
    evaluate,
    fit_classifier,
    fit_seeds,
    load_model,
    pick_device,
    predict,
    save_model,
    shard_batches,
)
from former.data import ClassificationData, TextSplit, Vocabulary, load_synthetic
from former.data.synthetic import generated_text
from former.generator import (
    GeneratorConfig,
    bits_per_byte,
    build_generator,
    fit_generator,
    sample_text,
)
from former.loop import format_metrics, lr_factor
from former.runs import checkpoint_paths
from former.threads import torch_threads

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the CI machine has only two cores."""
    with torch_threads(1):
        yield


def quiet(_: str) -> None:
    pass


def tiny_config(**overrides) -> ClassifierConfig:
    settings = dict(
        emb=16,
        heads=2,
        depth=1,
        max_length=32,
        batch_size=32,
        lr=3e-3,
        lr_warmup=64,
        epochs=2,
        dropout=0.0,
        evals_per_epoch=1,
        eval_subset=0,
        attention="sdpa",
    )
    return ClassifierConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def small_data() -> ClassificationData:
    return load_synthetic(n_train=256, n_val=64, seed=3)


def test_fit_learns_the_generated_corpus():
    """Word order decides these labels (negation, contrast); a short run must still learn them."""
    data = load_synthetic(seed=0)
    config = ClassifierConfig(
        emb=64,
        heads=4,
        depth=2,
        max_length=32,
        batch_size=32,
        lr=1e-3,
        lr_warmup=1_000,
        epochs=3,
        max_pool=True,
        dropout=0.0,
        evals_per_epoch=1,
        eval_subset=0,
        attention="sdpa",
    )
    model = build_classifier(config, len(data.vocab), data.num_classes)
    curve = []
    metrics = fit_classifier(model, data, config, device=CPU, log=quiet, on_eval=curve.append)
    assert [point["epoch"] for point in curve] == [1, 2, 3]
    assert metrics["val_acc"] > 0.9, curve


def test_metric_lines_have_the_documented_form(small_data):
    lines: list[str] = []
    config = tiny_config(epochs=1)
    fit_classifier(
        build_classifier(config, len(small_data.vocab), 2),
        small_data,
        config,
        device=CPU,
        log=lines.append,
    )
    assert len(lines) == 1
    assert lines[0].startswith("epoch=1 step=8 train_loss=")
    assert " val_acc=" in lines[0]
    assert format_metrics(epoch=2, train_loss=0.41, val_acc=0.873) == (
        "epoch=2 train_loss=0.41 val_acc=0.873"
    )


def test_resume_continues_at_the_saved_step(small_data, tmp_path):
    """A run resumed from a mid-run checkpoint ends with exactly the weights of an unbroken run."""
    config = tiny_config()  # 8 steps per epoch, 16 in all
    whole = tmp_path / "whole"
    model = build_classifier(config, len(small_data.vocab), 2)
    fit_classifier(
        model, small_data, config, device=CPU, checkpoint_dir=whole, checkpoint_every=3, log=quiet
    )
    steps = [int(path.stem.split("-")[1]) for path in checkpoint_paths(whole)]
    assert steps == [12, 15, 16]  # only the newest few are kept

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copy(checkpoint_paths(whole)[0], interrupted)  # as if the run died after step 12
    lines: list[str] = []
    resumed = build_classifier(config, len(small_data.vocab), 2)
    metrics = fit_classifier(
        resumed, small_data, config, device=CPU, checkpoint_dir=interrupted, log=lines.append
    )
    assert lines[0].startswith("resuming from step 12")
    assert metrics["step"] == 16
    for name, value in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, msg=name)


def test_resume_refuses_a_different_run(small_data, tmp_path):
    config = tiny_config(epochs=1)
    fit_classifier(
        build_classifier(config, len(small_data.vocab), 2),
        small_data,
        config,
        device=CPU,
        checkpoint_dir=tmp_path,
        log=quiet,
    )
    other = tiny_config(epochs=1, emb=32)
    with pytest.raises(RunMismatchError, match=r"emb: 16 -> 32"):
        fit_classifier(
            build_classifier(other, len(small_data.vocab), 2),
            small_data,
            other,
            device=CPU,
            checkpoint_dir=tmp_path,
            log=quiet,
        )
    # reporting settings may change on resume
    chattier = tiny_config(epochs=1, evals_per_epoch=2)
    fit_classifier(
        build_classifier(chattier, len(small_data.vocab), 2),
        small_data,
        chattier,
        device=CPU,
        checkpoint_dir=tmp_path,
        log=quiet,
    )


def test_checkpoint_writes_leave_no_temporary_files(small_data, tmp_path):
    config = tiny_config(epochs=1)
    fit_classifier(
        build_classifier(config, len(small_data.vocab), 2),
        small_data,
        config,
        device=CPU,
        checkpoint_dir=tmp_path,
        checkpoint_every=1,
        log=quiet,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-000000006.pt",
        "checkpoint-000000007.pt",
        "checkpoint-000000008.pt",
    ]


def test_save_load_predict_round_trip(small_data, tmp_path):
    config = tiny_config(epochs=1)
    model = build_classifier(config, len(small_data.vocab), 2)
    fit_classifier(model, small_data, config, device=CPU, log=quiet)
    path = save_model(tmp_path, model, config, small_data.vocab, class_names=("neg", "pos"))
    assert path == tmp_path / "model.pt"

    loaded, loaded_config, vocab = load_model(tmp_path)
    assert loaded_config == config
    assert vocab.itos == small_data.vocab.itos
    assert loaded.class_names == ("neg", "pos")
    texts = ["the movie was not good .", "the plot was boring but the cast was great .", "zzz"]
    before = predict(model, small_data.vocab, texts, config.max_length)
    after = predict(loaded, vocab, texts, config.max_length)
    assert [label for label, _ in after] == [label for label, _ in before]
    for (_, p_after), (_, p_before) in zip(after, before, strict=True):
        assert 0.5 <= p_after <= 1.0
        assert p_after == pytest.approx(p_before, abs=1e-6)
    assert evaluate(loaded, small_data.val, batch_size=16, max_length=32, device=CPU) == (
        evaluate(model, small_data.val, batch_size=16, max_length=32, device=CPU)
    )


def test_bigrams_are_picked_from_the_data_and_saved_with_the_model(small_data, tmp_path):
    """The word pairs a model embeds travel in model.pt: a loaded model (as SageMaker's fetch
    loads it) answers exactly as the trained one."""
    config = tiny_config(epochs=1, bigrams=50)
    assert build_classifier(config, len(small_data.vocab), 2).num_bigrams == 0  # no data, no pairs
    model = classifier_for(config, small_data)
    assert model.num_bigrams == 50
    fit_classifier(model, small_data, config, device=CPU, log=quiet)
    save_model(tmp_path, model, config, small_data.vocab)
    loaded, loaded_config, vocab = load_model(tmp_path)
    assert loaded_config.bigrams == 50
    assert torch.equal(loaded.backbone.bigram_embedding.keys, model.backbone.bigram_embedding.keys)
    split = small_data.val
    torch.testing.assert_close(
        class_probabilities(loaded, split, 16, 32, CPU),
        class_probabilities(model, split, 16, 32, CPU),
    )
    texts = ["the movie was not good .", "the plot was boring but the cast was great ."]
    assert predict(loaded, vocab, texts, 32) == predict(model, small_data.vocab, texts, 32)


def test_models_saved_before_bigrams_still_load(small_data, tmp_path):
    config = tiny_config(epochs=1)
    model = build_classifier(config, len(small_data.vocab), 2)
    path = save_model(tmp_path, model, config, small_data.vocab)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["bigrams"], payload["num_bigrams"]
    torch.save(payload, path)
    loaded, loaded_config, _ = load_model(tmp_path)
    assert loaded_config.bigrams == 0 and loaded.num_bigrams == 0
    assert loaded_config == replace(config, bigrams=0)


def test_an_ensemble_averages_its_members_probabilities(small_data):
    """fit_seeds keeps each member's probabilities from its last evaluation (no second pass)
    and draws the bigram keys once; the ensemble accuracy is that of their average."""
    config = tiny_config(epochs=1, bigrams=20)
    members = list(fit_seeds(config, small_data, 2, device=CPU, log=quiet))
    assert [member.config.seed for member in members] == [1, 2]
    models = [member.model for member in members]
    keys = [model.backbone.bigram_embedding.keys for model in models]
    assert torch.equal(keys[0], keys[1])
    split = small_data.val
    each = [class_probabilities(model, split, 16, 32, CPU) for model in models]
    for member, probabilities in zip(members, each, strict=True):
        torch.testing.assert_close(member.probabilities, probabilities)
        assert member.metrics["val_acc"] == pytest.approx(accuracy_of(probabilities, split))
    averaged = (each[0] + each[1]) / 2
    assert ensemble_accuracy(members, split) == pytest.approx(accuracy_of(averaged, split))
    assert not torch.allclose(each[0], each[1])
    texts = ["the movie was not good .", "the cast was great .", "zzz"]
    alone = [predict(model, small_data.vocab, texts, 32) for model in models]
    for i, (label, probability) in enumerate(predict(models, small_data.vocab, texts, 32)):
        of_label = [p if lab == label else 1 - p for lab, p in (each[i] for each in alone)]
        assert probability == pytest.approx(sum(of_label) / 2, abs=1e-6)


def accuracy_of(probabilities: torch.Tensor, split: TextSplit) -> float:
    return float((probabilities.argmax(dim=-1) == split.labels).float().mean())


def test_save_model_never_overwrites_another_run(small_data, tmp_path):
    config = tiny_config(epochs=1)
    model = build_classifier(config, len(small_data.vocab), 2)
    save_model(tmp_path, model, config, small_data.vocab)
    save_model(tmp_path, model, config, small_data.vocab)  # the same run may save again
    other = tiny_config(epochs=1, depth=2)
    with pytest.raises(RunMismatchError, match="depth"):
        save_model(
            tmp_path, build_classifier(other, len(small_data.vocab), 2), other, small_data.vocab
        )


def numbered_split(n: int) -> TextSplit:
    """Example i is the single token i + 2, so a batch says which examples it holds."""
    return TextSplit([torch.tensor([i + 2]) for i in range(n)], torch.zeros(n, dtype=torch.long))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 300),
    batch_size=st.integers(1, 40),
    world_size=st.integers(1, 4),
    epoch=st.integers(0, 3),
)
def test_shards_are_disjoint_and_cover_the_epoch(n, batch_size, world_size, epoch):
    config = tiny_config(batch_size=batch_size)
    split = numbered_split(n)
    shards = [
        [
            batch.tokens[:, 0].tolist()
            for batch in shard_batches(split, config, epoch, rank, world_size)
        ]
        for rank in range(world_size)
    ]
    assert len({len(shard) for shard in shards}) == 1  # every process runs the same number of steps
    seen = [[i for batch in shard for i in batch] for shard in shards]
    everything = [i for shard in seen for i in shard]
    assert set(everything) == set(range(2, n + 2))
    n_batches = -(-n // batch_size)
    if n_batches % world_size == 0:  # no wrap-around padding: each example exactly once
        assert sorted(everything) == list(range(2, n + 2))


def test_each_epoch_has_its_own_order():
    config = tiny_config(batch_size=4)
    split = numbered_split(64)
    first = [b.tokens[:, 0].tolist() for b in shard_batches(split, config, 0, 0, 1)]
    second = [b.tokens[:, 0].tolist() for b in shard_batches(split, config, 1, 0, 1)]
    again = [b.tokens[:, 0].tolist() for b in shard_batches(split, config, 0, 0, 1)]
    assert first == again and first != second


@settings(max_examples=50, deadline=None)
@given(
    warmup=st.integers(0, 50),
    extra=st.integers(1, 500),
    decay=st.sampled_from(["cosine", "linear"]),
)
def test_learning_rate_warms_up_then_decays_to_zero(warmup, extra, decay):
    total = warmup + extra
    factors = [lr_factor(step, warmup, total, decay) for step in range(total + 1)]
    rising, falling = factors[:warmup], factors[max(warmup - 1, 0) :]
    assert all(a < b for a, b in zip(rising, rising[1:], strict=False))
    assert all(a >= b for a, b in zip(falling, falling[1:], strict=False))
    assert max(factors) == 1.0
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(3, warmup, total, "constant") == (1.0 if warmup <= 3 else 4 / warmup)


def test_config_round_trips_and_rejects_bad_settings():
    config = ClassifierConfig(emb=48, heads=3)
    assert ClassifierConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="heads .5. must divide the embedding size .64."):
        ClassifierConfig(emb=64, heads=5)
    with pytest.raises(ValueError, match="unknown classifier settings"):
        ClassifierConfig.from_dict({"embedding": 3})


def test_pick_device():
    assert pick_device("cpu") == CPU
    assert pick_device("auto").type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("gpu0")


def test_predict_handles_unknown_words_and_empty_text():
    vocab = Vocabulary.build([["good"]], max_size=10)
    config = tiny_config()
    model = build_classifier(config, len(vocab), 2)
    results = predict(model, vocab, ["", "never seen words", "good " * 100], config.max_length)
    assert len(results) == 3
    assert all(label in (0, 1) and 0.5 <= p <= 1 for label, p in results)


# ---------------------------------------------------------------- generation


def tiny_generator_config(**overrides) -> GeneratorConfig:
    settings = dict(
        emb=16,
        heads=2,
        depth=1,
        context=16,
        batch_size=8,
        lr=3e-3,
        lr_warmup=16,
        num_batches=12,
        test_every=4,
        test_batches=2,
        sample_length=8,
        attention="sdpa",
    )
    return GeneratorConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def byte_data() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.frombuffer(bytearray(generated_text(20_000)), dtype=torch.uint8)
    return data[:18_000], data[18_000:]


def test_fit_generator_reports_bits_per_byte_samples_and_resumes(byte_data, tmp_path):
    train, val = byte_data
    config = tiny_generator_config()
    model = build_generator(config)
    curve, lines = [], []
    fit_generator(
        model,
        train,
        val,
        config,
        device=CPU,
        checkpoint_dir=tmp_path / "whole",
        log=lines.append,
        on_eval=curve.append,
        prompt="the ",
    )
    assert [point["step"] for point in curve] == [4, 8, 12]
    assert all(point["train_loss"] > 0 and 0 < point["val_bpb"] < 9 for point in curve)
    assert lines[0].startswith("step=4 train_loss=") and " val_bpb=" in lines[0]
    assert lines[1].startswith("sample: [the ]")

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copy(tmp_path / "whole" / "checkpoint-000000008.pt", interrupted)
    resumed, lines = build_generator(config), []
    fit_generator(
        resumed, train, val, config, device=CPU, checkpoint_dir=interrupted, log=lines.append
    )
    assert lines[0].startswith("resuming from step 8")
    assert lines[2].startswith("sample: [") and not lines[2].startswith("sample: [the ]")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, msg=name)


def test_without_the_mask_every_position_sees_the_future():
    inputs = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    changed_last = inputs.clone()
    changed_last[0, -1] = (inputs[0, -1] + 1) % 256
    for mask in (True, False):
        model = build_generator(tiny_generator_config(mask=mask)).eval()
        first = model(inputs)[0, 0], model(changed_last)[0, 0]
        assert torch.equal(*first) == mask, f"mask={mask}"


def test_without_the_mask_the_loss_collapses_but_the_model_cannot_predict(byte_data):
    """A model that sees the byte it predicts learns to copy it: far fewer bits than a causal
    model while it can copy, more once its mask is back on, as when it generates."""
    train, val = byte_data
    models, losses, bits = {}, {}, {}
    for mask in (True, False):
        config = tiny_generator_config(
            emb=32, batch_size=16, lr=1e-2, lr_warmup=64, num_batches=200, test_every=200, mask=mask
        )
        models[mask] = build_generator(config)
        metrics = fit_generator(models[mask], train, val, config, device=CPU, log=quiet)
        losses[mask], bits[mask] = metrics["train_loss"], metrics["val_bpb"]
    assert losses[False] < losses[True], losses
    assert bits[False] < 0.5 * bits[True], bits
    masked_again = build_generator(config_with_mask := replace(config, mask=True))
    masked_again.load_state_dict(models[False].state_dict())
    assert bits_per_byte(masked_again, val, config_with_mask, CPU) > bits[True], bits


def test_sample_text_continues_any_prompt():
    model = build_generator(tiny_generator_config())
    text = sample_text(model, "ROMEO: " * 5, length=20, temperature=0.8, seed=1)  # > context
    assert text == sample_text(model, "ROMEO: " * 5, length=20, temperature=0.8, seed=1)
    assert 0 < len(text) <= 20
    with pytest.raises(ValueError, match="at least one character"):
        sample_text(model, "")
    with pytest.raises(ValueError, match="temperature must be positive"):
        sample_text(model, "a", temperature=0)
