"""The staging adapter: feature-space and learned methods on users' own models (a torchvision-style ResNet-18, a
ViT, a transformers BERT classifier), unchanged and trained in place."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mixlab
from mixlab.models.adapter import AdapterError, StagedAdapter
from user_models import TVResNet18, ViT, tiny_bert, token_batch

IMAGE_METHODS = ["alignmix", "multimix", "dense-multimix", "manifold", "amp+sentmixup", "amp+manifold"]
TEXT_METHODS = ["manifold", "multimix", "wordmixup", "sentmixup", "amp+sentmixup", "amp+wordmixup"]


def build(kind: str, seed: int = 0):
    """(user model, a batch it takes, labels)."""
    torch.manual_seed(seed)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    if kind == "resnet":
        return TVResNet18(num_classes=3, width=8), torch.randn(6, 3, 64, 64), y
    if kind in ("vit", "vit-mean"):
        return ViT(num_classes=3, pool="cls" if kind == "vit" else "mean"), torch.randn(6, 3, 16, 16), y
    pytest.importorskip("transformers")
    return tiny_bert(num_classes=3), token_batch(6), y


def own_output(model, x):
    return model(input_ids=x, attention_mask=(x != 0).long()).logits if hasattr(model, "config") else model(x)


@pytest.mark.parametrize("kind", ["resnet", "vit", "vit-mean", "bert"])
def test_adapter_forward_equals_the_model_and_stages_compose(kind):
    model, x, _ = build(kind)
    model.eval()
    net = mixlab.stage(model)
    assert isinstance(net, StagedAdapter) and net.model is model
    with torch.no_grad():
        ref = own_output(model, x)
        torch.testing.assert_close(net(x), ref, rtol=0, atol=0)  # the model's own forward, bit for bit
        h = x
        for k in range(net.num_stages):  # one stage at a time, as methods run them
            h = net.forward_features(h, k, k + 1)
        torch.testing.assert_close(net.head(net.pool(h)), ref, rtol=1e-5, atol=1e-5)
    assert net.embed(x).shape == (6, net.embedding_dim)
    # state dict: the user's own keys, under "model."
    assert set(net.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}


def test_layouts_found():
    assert mixlab.stage(TVResNet18(10, width=8)).points == ("layer1", "layer2", "layer3", "layer4")
    vit = mixlab.stage(ViT(depth=6))
    assert vit.points == ("blocks.1", "blocks.3", "norm") and vit.mix_stages == (0, 1, 2)
    fmap = vit.forward_features(torch.randn(2, 3, 16, 16))
    assert fmap.shape == (2, 32, 17, 1)  # 16 patches + class token, as a (B, D, T, 1) map
    assert not vit.gap_linear_head  # class-token pooling is not GAP
    assert mixlab.stage(ViT(pool="mean")).forward_features(torch.randn(2, 3, 16, 16)) is not None
    staged = mixlab.create_model("cnn11", num_classes=3, width=0.25)
    assert mixlab.stage(staged) is staged


def check_training(net, user, method, x, y, steps=2):
    before = copy.deepcopy(user.state_dict())
    params = [p for p in net.parameters()] + [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05)
    net.train()
    for _ in range(steps):
        loss = method.training_loss(net, x, y)
        assert loss.dim() == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        grads = {name: p.grad for name, p in user.named_parameters()}
        missing = [name for name, g in grads.items() if g is None or not bool(g.abs().sum() > 0)]
        assert not missing, f"no gradient reached {missing}"
        opt.step()
    changed = [k for k, v in user.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) >= len(list(user.parameters())), "the user's own parameters are trained in place"


@pytest.mark.parametrize("kind", ["resnet", "vit"])
@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_image_methods_train_on_user_models(kind, name):
    model, x, y = build(kind)
    net = mixlab.stage(model)
    kwargs = {"n": 16} if "multimix" in name else {"p_input": 0.0, "max_iter": 20} if name == "alignmix" else {}
    method = mixlab.create(name, num_classes=3, seed=1, **kwargs)  # alignmix: the aligned feature branch
    check_training(net, model, method, x, y)


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_text_methods_train_on_a_transformers_classifier(name):
    model, x, y = build("bert")
    net = mixlab.stage(model)
    kwargs = {"n": 16} if name == "multimix" else {}
    method = mixlab.create(name, num_classes=3, seed=1, **kwargs)
    check_training(net, model, method, x, y)


def test_wordmixup_on_bert_attends_over_both_sentences():
    model, x, _ = build("bert")
    net = mixlab.stage(model).eval()
    h = net.forward_features(x, 0, 1)
    assert h.shape == (6, x.shape[1], 33) and torch.equal(h[..., -1], (x != 0).float())  # the mask channel
    short, long_ = x[[2]], x[[5]]
    assert int((short != 0).sum()) != int((long_ != 0).sum())


def test_learned_methods_on_user_models():
    model, x, y = build("resnet")
    net = mixlab.stage(model)
    automix = mixlab.create("automix-zhu", num_classes=3, seed=0, widths=(4, 8, 8, 8, 8), in_channels=3)
    check_training(net, model, automix, x, y)
    # TransformMix: a user's model as the teacher whose CAMs guide the mixing module
    from mixlab.methods.transformmix import MixingModule, TransformMix

    teacher_model, _, _ = build("resnet", seed=3)
    teacher = mixlab.stage(teacher_model)
    tmix = TransformMix(num_classes=3, seed=0).attach(teacher, MixingModule(k=2, image_size=64))
    student, _, _ = build("resnet", seed=4)
    check_training(mixlab.stage(student), student, tmix, x, y)
    assert teacher.gap_linear_head  # exact CAMs from the user's linear fc on GAP


class KuangResNet(nn.Module):
    """A CIFAR ResNet with functional glue in forward (F.relu, F.avg_pool2d, view): named points."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = F.avg_pool2d(out, out.shape[-1])
        return self.linear(out.view(out.size(0), -1))


class SkipAround(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.fc(self.b(h) + x)  # x skips past the point "a"


def test_named_points_keep_functional_glue_and_refuse_bad_cuts():
    model = KuangResNet()
    net = mixlab.stage(model, points=["layer1", "layer2"], head="linear").eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.head(net.pool(net.forward_features(x))), model(x))
    assert net.gap_linear_head  # avg_pool2d over the whole map + view is GAP
    check_training(net, model, mixlab.create("manifold", num_classes=3, layers=(1,)), x, torch.tensor([0, 1, 2]))
    with pytest.raises(AdapterError, match="skip connection"):
        mixlab.stage(SkipAround(), points=["a", "b"], head="fc")
    with pytest.raises(AdapterError, match="no sub-modules"):
        mixlab.stage(model, points=["layer9"], head="linear")
    with pytest.raises(AdapterError, match="does not know the layout"):
        mixlab.stage(SkipAround())


def test_verification_catches_a_head_that_is_not_the_output():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.body(x)) * 2.0

    with pytest.raises(AdapterError, match="does not return the output of head"):
        mixlab.stage(TwoHeads(), points=["body"], head="fc")


def test_adapter_moves_with_to_and_deepcopies():
    model, x, _ = build("vit")
    net = copy.deepcopy(mixlab.stage(model)).to(torch.float64).eval()
    with torch.no_grad():
        out = net.head(net.pool(net.forward_features(x.double())))
    assert out.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in net.model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the copy, not the original
