"""The model: shapes, one decoder per identity (three need no code change), the mask head,
safetensors round trip, a record from before the mask head, Swapper and Swapper.swap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facedag.training.model import ModelConfig, NoMaskHead, Swapper, build_model, load_model, save_model

CFG = ModelConfig(face_size=32, encoder_width=8, decoder_width=8, bottleneck=16, identities=("src", "dst", "carol"))


def test_shapes_and_range_with_three_identities() -> None:
    torch.manual_seed(0)
    model = build_model(CFG).requires_grad_(False)
    x = torch.rand(2, 3, 32, 32)
    z = model.encode(x)
    assert z.shape == (2, 8 * CFG.decoder_width, 4, 4)
    for name in CFG.identities:
        y, mask = model.decode(z, name, model.skip(x))
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert mask.shape == (2, 1, 32, 32) and float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
        assert torch.equal(model(x, name), y) and torch.equal(model.forward_masked(x, name)[1], mask)
    assert set(model.decoders) == {"src", "dst", "carol"}
    # decoders are separate modules with their own weights; the encoder is shared
    ids = {id(p) for name in CFG.identities for p in model.decoders[name].parameters()}
    assert len(ids) == 3 * len(list(model.decoders["src"].parameters()))
    assert not torch.equal(model(x, "src"), model(x, "dst"))
    with pytest.raises(KeyError, match="no decoder"):
        model.decode(z, "nobody")


@pytest.mark.parametrize("size", [64, 128])
def test_face_sizes(size: int) -> None:
    cfg = ModelConfig(size, 8, 8, 16, ("a", "b"))
    assert build_model(cfg)(torch.rand(1, 3, size, size), "b").shape == (1, 3, size, size)


def test_config_validation_and_dict_round_trip() -> None:
    assert ModelConfig.from_dict(json.loads(json.dumps(CFG.to_dict()))) == CFG
    with pytest.raises(ValueError, match="multiple of 16"):
        ModelConfig(40, 8, 8, 16, ("a",))
    with pytest.raises(ValueError, match="distinct"):
        ModelConfig(32, 8, 8, 16, ("a", "a"))


def test_save_load_and_swapper(tmp_path) -> None:
    torch.manual_seed(1)
    model = build_model(CFG)
    save_model(model, CFG, tmp_path, {"step": 7, "dataset_hash": "abc"})
    record = json.loads((tmp_path / "model.json").read_text())
    assert record["step"] == 7 and record["dataset_hash"] == "abc" and record["identities"] == list(CFG.identities)
    loaded, cfg = load_model(tmp_path)
    assert cfg == CFG and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    faces = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    swap = Swapper(tmp_path, "src", batch=2)
    out = swap(faces)
    assert out.shape == faces.shape and out.dtype == np.uint8
    with torch.no_grad():
        x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
        rgb, mask = model.forward_masked(x, "src")
        ref = (rgb * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(out, ref)
    faces_too, masks = swap.swap(faces)
    assert np.array_equal(faces_too, out) and masks.shape == (5, 32, 32) and masks.dtype == np.float32
    assert np.allclose(masks, mask[:, 0].numpy())
    with pytest.raises(ValueError, match="uint8"):
        swap(faces[:, :16])
    with pytest.raises(KeyError):
        Swapper(tmp_path, "nobody")


def test_one_encoder_pass_for_every_identity_gives_what_separate_passes_give() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(32, 4, 4, 8, ("src", "dst", "third"))
    model = build_model(cfg)
    xs = [torch.rand(n, 3, 32, 32) for n in (2, 3, 1)]
    together, apart = model.forward_all(xs, together=True), model.forward_all(xs, together=False)
    assert [y.shape[0] for y, _ in together] == [2, 3, 1]
    assert all(torch.allclose(a, b, atol=1e-6) for ta, tb in zip(together, apart, strict=True)
               for a, b in zip(ta, tb, strict=True))
    assert all(torch.equal(y, model(x, name)) for (y, _), x, name in zip(apart, xs, cfg.identities, strict=True))


def test_a_record_from_before_the_mask_head_loads_mask_less(tmp_path) -> None:
    """Format 1 records have no `mask` key: their weights have no mask head, and they load as such;
    Swapper.swap (convert.mask learned) then says so in one line."""
    old = ModelConfig(32, 8, 8, 16, ("src", "dst"), mask=False)
    torch.manual_seed(2)
    model = build_model(old)
    assert not any("mask" in k for k in model.state_dict())
    save_model(model, old, tmp_path, {"step": 1})
    record = json.loads((tmp_path / "model.json").read_text())
    del record["config"]["mask"]
    record["format"] = 1
    (tmp_path / "model.json").write_text(json.dumps(record))
    loaded, cfg = load_model(tmp_path)
    assert cfg == old and loaded.forward_masked(torch.rand(1, 3, 32, 32), "src")[1] is None
    swap = Swapper(tmp_path, "src")
    faces = np.zeros((1, 32, 32, 3), np.uint8)
    assert swap(faces).shape == faces.shape and not swap.has_mask
    with pytest.raises(NoMaskHead, match="trained before the mask head"):
        swap.swap(faces)


def test_swapper_takes_the_mask_from_the_replaced_identitys_decoder(tmp_path: Path) -> None:
    """convert's learned mask is dst's decoder's (its mask head learned dst's faces and their
    occluders), the face src's: mask_from picks the mask's decoder, the RGB stays to_identity's."""
    cfg = ModelConfig(32, 8, 8, 16, ("src", "dst"))
    torch.manual_seed(5)
    save_model(build_model(cfg), cfg, tmp_path, {"step": 1})
    faces = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    as_src, src_masks = Swapper(tmp_path, "src").swap(faces)
    dst_masks = Swapper(tmp_path, "dst").swap(faces)[1]
    mixed, mixed_masks = Swapper(tmp_path, "src", mask_from="dst").swap(faces)
    assert np.array_equal(mixed, as_src) and np.array_equal(mixed_masks, dst_masks)
    assert not np.array_equal(src_masks, dst_masks)  # the two decoders' masks differ: the choice matters
    with pytest.raises(KeyError, match="nobody"):
        Swapper(tmp_path, "src", mask_from="nobody")
