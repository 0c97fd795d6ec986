import pytest
import torch
from transformers import BlipForConditionalGeneration, BlipProcessor

from blipexp.data import pitch
from blipexp.data.sources import CaptionData
from blipexp.experiment.spec import TINY_RANDOM_MODEL, ExperimentSpec
from blipexp.model.feature_cache import FeatureCache, PassThroughVision
from blipexp.model.modeling import ModelSourceError, adapter_dir, load_model_and_processor, prepare_for_training
from blipexp.model.pretrain import pretrained_tiny
from blipexp.model.tiny import build_tiny_model, build_tiny_processor
from blipexp.runtime.progress import no_weight_progress_bars

CAPTIONS = ["A red player dribbles the ball.", "two blue players chase the ball"]


def test_tiny_tokenizer_knows_every_caption_word():
    processor = build_tiny_processor(CAPTIONS)
    ids = processor.tokenizer("a red player dribbles the ball.")["input_ids"]
    assert processor.tokenizer.unk_token_id not in ids
    assert processor.tokenizer.bos_token == "[DEC]"


def test_tiny_model_saved_loads_like_a_real_checkpoint(tmp_path):
    processor = build_tiny_processor(CAPTIONS)
    model = build_tiny_model(processor, seed=0)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = BlipForConditionalGeneration.from_pretrained(tmp_path)
    loaded_processor = BlipProcessor.from_pretrained(tmp_path)
    pixels = torch.rand(2, 3, 64, 64)
    assert torch.equal(model.generate(pixel_values=pixels, max_new_tokens=5),
                       loaded.generate(pixel_values=pixels, max_new_tokens=5))
    assert loaded_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()


def test_tiny_init_is_seeded():
    processor = build_tiny_processor(CAPTIONS)
    a, b, c = (build_tiny_model(processor, seed=s) for s in (1, 1, 2))
    weight = lambda m: m.text_decoder.cls.predictions.decoder.weight  # noqa: E731
    assert torch.equal(weight(a), weight(b)) and not torch.equal(weight(a), weight(c))


def test_local_folder_model_loads(tmp_path):
    processor = build_tiny_processor(CAPTIONS)
    build_tiny_model(processor, seed=0).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model, loaded = load_model_and_processor(ExperimentSpec(model=str(tmp_path)), [], tmp_path)
    assert isinstance(model, BlipForConditionalGeneration) and len(loaded.tokenizer) == len(processor.tokenizer)


def test_local_weights_are_read_and_written_without_a_bar_and_the_bars_come_back_after(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    processor = build_tiny_processor(CAPTIONS)
    model = build_tiny_model(processor, seed=0)
    model.save_pretrained(tmp_path / "a")
    processor.save_pretrained(tmp_path / "a")
    assert "Writing model shards" in capfd.readouterr().err, "transformers draws the bar by default"
    load_model_and_processor(ExperimentSpec(model=str(tmp_path / "a")), [], tmp_path)  # a local folder
    with no_weight_progress_bars():
        model.save_pretrained(tmp_path / "b")
    quiet = capfd.readouterr().err
    assert "Loading weights" not in quiet and "Writing model shards" not in quiet, quiet
    assert hf_logging.is_progress_bar_enabled(), "on again after"
    hf_logging.disable_progress_bar()
    try:
        with no_weight_progress_bars():
            pass
        assert not hf_logging.is_progress_bar_enabled(), "bars the user turned off stay off"
    finally:
        hf_logging.enable_progress_bar()


def test_unreachable_hub_model_fails_fast_naming_the_fixes(tmp_path):
    spec = ExperimentSpec(model="Salesforce/no-such-blip-model-offline")
    with pytest.raises(ModelSourceError, match="--tiny.*--set model="):
        load_model_and_processor(spec, [], tmp_path)


def test_missing_local_folder_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_model_and_processor(ExperimentSpec(model=str(tmp_path / "nope")), [], tmp_path)


def test_tiny_is_the_pretrained_model_and_knows_the_pitch_words(home):
    model, processor = load_model_and_processor(ExperimentSpec().tiny(), pitch.all_captions(), home)
    cached = BlipForConditionalGeneration.from_pretrained(pretrained_tiny(home))
    assert all(torch.equal(v, cached.state_dict()[k]) for k, v in model.state_dict().items())
    assert len(processor.tokenizer) == model.config.text_config.vocab_size, "no word was added"
    ids = processor.tokenizer(pitch.all_captions())["input_ids"]
    assert processor.tokenizer.unk_token_id not in {i for row in ids for i in row}


def test_unknown_caption_words_are_added_to_the_tokenizer_and_the_embeddings(home):
    spec = ExperimentSpec().tiny()
    before, known = load_model_and_processor(spec, [], home)
    captions = ["A goalkeeper saves the penalty", "two red players chase the ball"]
    model, processor = load_model_and_processor(spec, captions, home)
    tokenizer, new = processor.tokenizer, ["goalkeeper", "penalty", "saves"]
    assert len(tokenizer) == len(known.tokenizer) + 3 == model.config.text_config.vocab_size
    ids = tokenizer("A goalkeeper saves the penalty")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["a", "goalkeeper", "saves", "the", "penalty"]
    assert all(tokenizer.get_vocab()[w] >= len(known.tokenizer) for w in new), "appended after the known words"
    assert {w: tokenizer.get_vocab()[w] for w in known.tokenizer.get_vocab()} == known.tokenizer.get_vocab()
    embeddings, old = model.get_input_embeddings().weight, before.get_input_embeddings().weight
    assert embeddings.shape[0] == len(tokenizer) and torch.equal(embeddings[:len(old)], old)
    pixels = torch.rand(1, 3, 64, 64)
    logits = model(pixel_values=pixels, input_ids=torch.tensor([ids])).logits
    assert logits.shape[-1] == len(tokenizer), "the decoder can also predict the new words"


def test_tiny_random_is_the_random_init_preset_with_the_captions_vocabulary(tmp_path):
    spec = ExperimentSpec().tiny().replace(model=TINY_RANDOM_MODEL)
    model, processor = load_model_and_processor(spec, CAPTIONS, tmp_path)
    assert spec.is_tiny and spec.profile == "tiny"
    assert processor.tokenizer.get_vocab() == build_tiny_processor(CAPTIONS).tokenizer.get_vocab()
    assert not (tmp_path / "cache").exists(), "no pretraining for the random preset"


def prepared(tmp_path, echo=False, **changes):
    """A tiny model adapted for training as a tiny spec with `changes` says."""
    spec = ExperimentSpec().tiny().replace(**changes)
    processor = build_tiny_processor(CAPTIONS)
    model = build_tiny_model(processor, seed=0)
    data = CaptionData(train=[], validation=[], test=[], skipped={}, total=0, fingerprint="f", source="s")
    return model, prepare_for_training(model, processor, spec, data, tmp_path, echo=echo)


def test_without_a_frozen_encoder_the_whole_model_learns_from_pixels(tmp_path):
    model, ready = prepared(tmp_path, freeze_vision_encoder=False, cache_vision_features=True)
    vision = model.vision_model
    assert ready.model is model and ready.cache is None
    assert all(p.requires_grad for p in model.parameters())
    with ready.vision_inputs():
        assert model.vision_model is vision


def test_a_frozen_encoder_without_the_cache_still_reads_pixels(tmp_path):
    model, ready = prepared(tmp_path, freeze_vision_encoder=True, cache_vision_features=False)
    assert ready.cache is None
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    assert all(p.requires_grad for p in model.text_decoder.parameters())
    with ready.vision_inputs():
        assert not isinstance(model.vision_model, PassThroughVision)


def test_cached_features_put_the_encoder_aside_only_while_batches_carry_them(tmp_path):
    model, ready = prepared(tmp_path, freeze_vision_encoder=True, cache_vision_features=True)
    vision = model.vision_model
    assert isinstance(ready.cache, FeatureCache) and ready.cache.root == tmp_path / "cache" / "vision"
    assert ready.cache.vision is vision, "the cache computes features with the frozen encoder"
    assert not any(p.requires_grad for p in vision.parameters())
    with pytest.raises(RuntimeError, match="interrupted"), ready.vision_inputs():
        assert isinstance(model.vision_model, PassThroughVision)
        raise RuntimeError("interrupted")
    assert model.vision_model is vision, "back for saving and for sample captions, even after a failure"


def test_lora_trains_the_adapters_only_and_says_how_many(tmp_path, capsys):
    full = prepared(tmp_path)[1].parameter_counts()
    model, ready = prepared(tmp_path, adapter="lora", lora_r=4, echo=True)
    counts = ready.parameter_counts()
    assert ready.is_lora and ready.blip is model
    trainable = [name for name, p in ready.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name and ".text_decoder." in name for name in trainable)
    # 2 layers x (self + cross attention) x (query, key, value, output): 16 Linear 128 -> 128, each r*(128+128)
    assert counts["trainable_parameters"] == 16 * 4 * (128 + 128) < full["trainable_parameters"]
    assert counts["total_parameters"] == full["total_parameters"] + counts["trainable_parameters"]
    share = counts["trainable_parameters"] / counts["total_parameters"]
    assert capsys.readouterr().out == (f"trainable: 16.4K of {counts['total_parameters'] / 1e3:.3g}K parameters "
                                       f"({share:.1%}) — lora r=4 on text decoder attention (self and cross: query, "
                                       "key, value, output)\n")


def test_lora_on_the_vision_encoder_too(tmp_path):
    _, ready = prepared(tmp_path, adapter="lora", lora_targets="decoder+vision")
    adapted = {name.split(".lora_")[0] for name, p in ready.model.named_parameters() if p.requires_grad}
    assert any(".vision_model." in name and name.endswith("self_attn.qkv") for name in adapted)
    assert any(".text_decoder." in name and name.endswith("crossattention.self.value") for name in adapted)


@pytest.mark.parametrize("changes, message", [
    ({"lora_targets": "decoder_typo"}, "matches no layer of the model: --set lora_targets= one of decoder"),
    ({"lora_targets": "text_decoder"}, "matches text_decoder, not a Linear layer"),
    ({"lora_targets": "decoder+vision", "freeze_vision_encoder": True},
     "adapts the vision encoder, which freeze_vision_encoder=true keeps fixed: --set lora_targets=decoder"),
])
def test_lora_targets_that_cannot_work_name_the_fix(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        prepared(tmp_path, adapter="lora", cache_vision_features=False, **changes)


def test_lora_with_cached_features_sets_the_encoder_of_the_wrapped_model_aside(tmp_path):
    model, ready = prepared(tmp_path, adapter="lora", freeze_vision_encoder=True, cache_vision_features=True)
    vision = model.vision_model
    assert ready.cache is not None and ready.cache.vision is vision
    with ready.vision_inputs():
        assert isinstance(model.vision_model, PassThroughVision)
    assert model.vision_model is vision


def test_merged_lora_model_loads_without_peft_and_keeps_the_adapters_effect(tmp_path):
    model, ready = prepared(tmp_path, adapter="lora")
    with torch.no_grad():
        for name, p in ready.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: a non-zero update
    ready.model.eval()
    pixels = torch.rand(2, 3, 64, 64)
    ids = torch.tensor([[5, 6, 7], [5, 8, 9]])
    adapted = ready.model(pixel_values=pixels, input_ids=ids).logits
    model_dir = tmp_path / "run" / "model"
    merged = ready.merge_lora(adapter_dir(model_dir))
    merged.save_pretrained(model_dir)
    assert (adapter_dir(model_dir) / "adapter_config.json").is_file()
    assert not any("lora_" in key or "base_layer" in key for key in merged.state_dict())
    loaded, info = BlipForConditionalGeneration.from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    plain = loaded.eval()(pixel_values=pixels, input_ids=ids).logits
    assert torch.allclose(plain, adapted, atol=1e-4), "the merged weights answer as base + adapter did"
