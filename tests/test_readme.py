"""The README's "Use it in your own training" recipes, run as written on tiny data."""
import re
import shlex
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import mixlab
from mixlab.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def section_blocks(language: str) -> list[str]:
    text = README.read_text()
    section = text.split("## Use it in your own training", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def namespace(tmp_path):
    """What the recipes call yours: a user's model, its optimiser, data and loaders (10 classes, 32x32)."""
    from user_models import TVResNet18

    torch.manual_seed(0)
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    data = TensorDataset(images, labels)
    model = TVResNet18(num_classes=10, width=8)
    return {"mixlab": mixlab, "DataLoader": DataLoader, "model": model, "data": data, "epochs": 2,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.01), "loader": DataLoader(data, batch_size=8),
            "x": images[:8], "y": labels[:8], "train_dataset": data, "test_dataset": TensorDataset(images[:8],
                                                                                                   labels[:8])}


def test_the_readme_has_the_recipes():
    python = section_blocks("python")
    assert len(python) == 5 and len(section_blocks("bash")) == 1
    assert any("mixlab.stage(model)" in b for b in python) and any("MixCollate" in b for b in python)


@pytest.mark.parametrize("index", range(5))
def test_python_recipe_runs(index, tmp_path, monkeypatch):
    block = section_blocks("python")[index]
    monkeypatch.chdir(tmp_path)  # Lightning and the engine write their folders here
    ns = namespace(tmp_path)
    if "lightning" in block:
        pl = pytest.importorskip("lightning.pytorch")
        import lightning

        class Own(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))

            def training_step(self, batch, batch_idx):
                return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        ns.update(lightning=lightning, own_module=Own())
    before = [p.detach().clone() for p in ns["model"].parameters()]
    exec(compile(block, f"README recipe {index}", "exec"), ns)
    if "loss" in ns:
        assert torch.isfinite(ns["loss"])
    if "x_mix" in ns:
        assert ns["y_mix"].shape == (8, 10)
    if "trainer" in ns or "result" in ns or "optimizer.step" in block:  # the user's model was trained in place
        assert any(not torch.equal(p, q) for p, q in zip(ns["model"].parameters(), before))


def test_command_line_recipes_run(tmp_path):
    pytest.importorskip("datasets")
    from test_data_doors import hf_images, write_folder

    folder = write_folder(tmp_path / "folder")
    hf_images(tmp_path).save_to_disk(str(tmp_path / "hf"))
    paths = {"imagefolder:PATH": f"imagefolder:{folder}", "hf:PATH": f"hf:{tmp_path / 'hf'}"}
    small = ["--epochs", "1", "--model-arg", "width=4", "--batch-size", "8", "--threads", "1", "--no-progress",
             "--out", str(tmp_path / "out")]
    lines = [line for line in section_blocks("bash")[0].splitlines() if line.startswith("mixlab ")]
    assert len(lines) == 2
    for line in lines:
        args = [paths.get(a, a) for a in shlex.split(line)[1:]]
        assert main(args + small) == 0
