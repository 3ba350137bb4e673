"""Precision: auto is bf16 autocast only on CPUs with native bf16; the config, log and env.json
say which; a bf16 run resumes exactly."""

import io
import json

import pytest
import torch
from safetensors.torch import load_file

from reslab import precision
from reslab.config import make_config
from reslab.errors import ReslabError
from reslab.precision import cpu_bf16, matmul_gflops, resolve_precision
from reslab.train import logging
from reslab.train.loop import fit

CPU = torch.device("cpu")


@pytest.fixture
def fake_cpu(monkeypatch):
    """Set the CPU's reported capabilities and the start-up matmul's measured speeds."""

    monkeypatch.delenv("RESLAB_CPU_BF16", raising=False)

    def set_cpu(amx: bool, avx512_bf16: bool, fp32: float = 100.0, bf16: float = 100.0):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(precision, "matmul_gflops", lambda dtype, **_: bf16 if dtype == torch.bfloat16 else fp32)
        precision._probe_cpu_bf16.cache_clear()

    yield set_cpu
    precision._probe_cpu_bf16.cache_clear()


@pytest.mark.parametrize("amx, avx, fp32, bf16, native", [
    (True, True, 100.0, 10.0, True),      # AMX: native, no measurement needed
    (False, False, 100.0, 900.0, False),  # neither: bf16 would be emulated
    (False, True, 100.0, 160.0, True),    # AVX512-BF16 measured 1.6x fp32
    (False, True, 100.0, 120.0, False),   # AVX512-BF16 but only 1.2x: not worth it
])
def test_auto_picks_bf16_only_where_the_cpu_has_it(fake_cpu, amx, avx, fp32, bf16, native):
    fake_cpu(amx, avx, fp32, bf16)
    p = resolve_precision("auto", CPU)
    assert p.dtype == (torch.bfloat16 if native else None)
    assert p.name == ("bf16" if native else "fp32")
    assert p.reason.startswith("bf16 autocast: the CPU has AMX") == amx
    if avx and not amx:
        assert f"{bf16:.0f} vs fp32 {fp32:.0f} GFLOP/s" in p.reason


def test_forced_precisions_and_fp16_on_a_cpu(fake_cpu):
    fake_cpu(False, False)
    assert resolve_precision("bf16", CPU).dtype == torch.bfloat16
    assert resolve_precision("fp32", CPU).dtype is None
    with pytest.raises(ReslabError, match="fp16 is for GPUs"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ReslabError, match="amp must be one of"):
        resolve_precision("fp8", CPU)


def test_the_real_cpu_probe_is_consistent_with_its_flags(monkeypatch):
    monkeypatch.delenv("RESLAB_CPU_BF16", raising=False)
    precision._probe_cpu_bf16.cache_clear()
    got = cpu_bf16()
    if torch.cpu._is_amx_tile_supported():
        assert got.native
    elif not torch.cpu._is_avx512_bf16_supported():
        assert not got.native
    assert matmul_gflops(torch.float32, n=128, seconds=0.001) > 0


def test_config_reads_old_true_false_and_refuses_other_values():
    assert make_config(amp=True).amp == "auto"
    assert make_config({"amp": False}).amp == "fp32"
    assert make_config().amp == "auto"
    with pytest.raises(ReslabError, match="amp must be one of auto, bf16, fp16, fp32"):
        make_config(amp="half")


def _cfg(amp, **kw):
    return make_config(model="resnet20", model_args={"layers": [1, 1, 1], "widths": [4, 8, 16]}, data="embedded", batch_size=32, lr=0.05, schedule="step", milestones=[1],
                       deterministic=True, progress=False, tensorboard=False, pad=2, amp=amp, **kw)


def test_bf16_run_logs_its_precision_and_resumes_exactly(tmp_path, tiny, monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(logging, "log_stream", log)
    # a narrow ResNet-8 keeps this cheap on CPUs where bf16 is emulated (forced bf16 runs there too, slowly)
    fit(_cfg("bf16", epochs=2), tmp_path / "whole", data=tiny)
    assert "precision: bf16 autocast (amp bf16)\n" in log.getvalue()
    env = json.loads((tmp_path / "whole" / "env.json").read_text())
    assert (env["precision"], env["precision_reason"]) == ("bf16", "bf16 autocast (amp bf16)")
    fit(_cfg("bf16", epochs=1), tmp_path / "split", data=tiny)
    fit(_cfg("bf16", epochs=2), tmp_path / "split", data=tiny, resume=True)
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "a resumed bf16 run diverged from the uninterrupted one"
    # and bf16 really ran: the same run in fp32 ends with other weights
    fit(_cfg("fp32", epochs=2), tmp_path / "fp32", data=tiny)
    c = load_file(str(tmp_path / "fp32" / "checkpoints" / "last.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)
    env = json.loads((tmp_path / "fp32" / "env.json").read_text())
    assert env["precision"] == "fp32"
