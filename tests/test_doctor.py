"""`vacelive doctor` against faked machines: each probe is replaced, and the report must name the
problem, say what to do, and exit non-zero only for real problems."""
from __future__ import annotations

import socket

import pytest

from vacelive.bridge import cli, doctor

H100 = {"installed": True, "version": "2.13.0+cu128", "cuda_build": "12.8", "cuda_available": True,
        "mps": False, "cudnn": 91002,
        "devices": [{"name": "NVIDIA H100 80GB HBM3", "capability": (9, 0), "memory_gb": 79.1}]}
CPU_TORCH = {"installed": True, "version": "2.13.0+cpu", "cuda_build": None, "cuda_available": False,
             "mps": False, "devices": []}
SMI = {"driver": "570.124.06", "gpus": ["NVIDIA H100 80GB HBM3"]}


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A healthy Linux GPU box with every weight file present; tests then break one thing."""
    monkeypatch.setattr(doctor, "torch_facts", lambda: dict(H100))
    monkeypatch.setattr(doctor, "nvidia_smi", lambda: dict(SMI))
    monkeypatch.setattr(doctor, "sdpa_backends", lambda: {"cudnn": None, "flash": None, "efficient": None})
    monkeypatch.setattr(doctor, "fp8_works", lambda: None)
    monkeypatch.setattr(doctor, "port_free", lambda host, port, kind: None)
    monkeypatch.setattr(doctor, "shm_works", lambda: None)
    monkeypatch.setattr(doctor, "module_status", lambda name: None)
    monkeypatch.setattr(doctor, "interop_reason", lambda: None)
    _fill_models(tmp_path)
    return doctor.Options(models=str(tmp_path), platform="linux")


def _fill_models(root):
    from vacelive.engine.pipelines import RECIPES

    for recipe in RECIPES.values():
        for f in recipe.files:
            (root / f.path).parent.mkdir(parents=True, exist_ok=True)
            (root / f.path).write_bytes(b"x")


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_healthy_gpu_box_passes(machine):
    checks = doctor.run_checks(machine)
    assert doctor.exit_code(checks) == 0
    assert [c for c in checks if c.status in ("warn", "fail")] == []
    got = _by_name(checks)
    assert "H100" in got["cuda:0"].detail and "9.0" in got["cuda:0"].detail
    assert got["NVIDIA driver"].detail.startswith("570.124.06")
    assert {"SDPA cudnn", "SDPA flash", "SDPA efficient", "FP8 (--fp8)"} <= set(got)
    assert got["GL interop"].status == "ok"
    report = doctor.format_report(checks)
    assert "0 problem(s), 0 warning(s)" in report


def test_relay_only_install_is_not_a_problem(machine, monkeypatch):
    monkeypatch.setattr(doctor, "torch_facts", lambda: {"installed": False})
    monkeypatch.setattr(doctor, "nvidia_smi", lambda: None)
    import shutil

    shutil.rmtree(machine.models)  # a relay keeps no weights
    checks = doctor.run_checks(machine)
    got = _by_name(checks)
    assert "torch not installed: relay-only install" in got["torch"].detail
    assert got["torch"].status == "info"
    assert "'.[engine]'" in got["torch"].fix
    assert "engine box" in got["SDPA kernels"].detail
    assert all(c.status == "info" for c in checks if c.section == "models")  # weights live on the engine box
    assert doctor.exit_code(checks) == 0


def test_cpu_torch_on_a_gpu_box_is_a_problem_with_the_fix(machine, monkeypatch):
    monkeypatch.setattr(doctor, "torch_facts", lambda: dict(CPU_TORCH))
    checks = doctor.run_checks(machine)
    cuda = _by_name(checks)["CUDA"]
    assert cuda.status == "fail" and "CPU-only build" in cuda.detail
    assert "--index-url https://download.pytorch.org/whl/cu" in cuda.fix
    assert doctor.exit_code(checks) == 1


def test_cuda_torch_newer_than_the_driver(machine, monkeypatch):
    monkeypatch.setattr(doctor, "torch_facts", lambda: dict(H100, cuda_available=False, devices=[]))
    cuda = _by_name(doctor.run_checks(machine))["CUDA"]
    assert cuda.status == "fail" and "570.124.06" in cuda.detail and "update the NVIDIA driver" in cuda.fix


def test_no_gpu_at_all_is_a_warning(machine, monkeypatch):
    monkeypatch.setattr(doctor, "torch_facts", lambda: dict(CPU_TORCH))
    monkeypatch.setattr(doctor, "nvidia_smi", lambda: None)
    checks = doctor.run_checks(machine)
    got = _by_name(checks)
    assert got["GPU"].status == "warn" and "vacelive relay" in got["GPU"].fix
    assert got["SDPA kernels"].status == "info"
    assert doctor.exit_code(checks) == 0


def test_broken_torch_install_is_a_problem(machine, monkeypatch):
    monkeypatch.setattr(doctor, "torch_facts", lambda: {"installed": True, "error": "OSError: libcudnn.so.9"})
    got = _by_name(doctor.run_checks(machine))
    assert got["torch"].status == "fail" and "libcudnn" in got["torch"].detail


def test_attention_kernels_and_fp8_unavailable(machine, monkeypatch):
    monkeypatch.setattr(doctor, "sdpa_backends", lambda: {n: "No available kernel" for n in ("cudnn", "flash", "efficient")})
    monkeypatch.setattr(doctor, "fp8_works", lambda: "compute capability 8.0; FP8 matmuls need 8.9 or newer")
    checks = doctor.run_checks(machine)
    got = _by_name(checks)
    assert got["SDPA cudnn"].status == "info" and "No available kernel" in got["SDPA cudnn"].detail
    assert got["SDPA"].status == "warn"
    assert got["FP8 (--fp8)"].status == "info" and "leave --fp8 off" in got["FP8 (--fp8)"].fix
    assert doctor.exit_code(checks) == 0


def test_missing_weights_warn_and_fail_when_the_pipeline_is_named(machine, tmp_path):
    missing = tmp_path / "LongLive-1.3B" / "models" / "lora.pt"
    missing.unlink()
    got = _by_name(doctor.run_checks(machine))
    assert got["longlive"].status == "warn"
    assert "LongLive-1.3B/models/lora.pt" in got["longlive"].detail
    assert got["longlive"].fix.startswith("vacelive weights download longlive --models")
    assert got["self-forcing"].status == "ok" and "other pipelines" not in got
    (tmp_path / "Self-Forcing" / "checkpoints" / "self_forcing_dmd.pt").unlink()
    got = _by_name(doctor.run_checks(machine))  # pipelines other than the default: one line
    assert got["other pipelines"].status == "info" and "self-forcing (1 missing)" in got["other pipelines"].detail
    assert "self-forcing" not in got
    machine.pipeline = "self-forcing"  # named: its missing files are listed and a problem
    got = _by_name(doctor.run_checks(machine))
    assert got["self-forcing"].status == "fail" and "self_forcing_dmd.pt" in got["self-forcing"].detail
    machine.pipeline = "longlive"
    checks = doctor.run_checks(machine)
    assert _by_name(checks)["longlive"].status == "fail" and doctor.exit_code(checks) == 1


def test_codec_option_changes_the_files_checked(machine, tmp_path):
    (tmp_path / "Autoencoders" / "taew2_1.pth").unlink()
    assert _by_name(doctor.run_checks(machine))["longlive"].status == "ok"  # wan codec: TAE not needed
    machine.codec = "tae"
    assert "taew2_1.pth" in _by_name(doctor.run_checks(machine))["longlive"].detail


def test_unknown_pipeline_is_reported(machine):
    machine.pipeline = "nope"
    got = _by_name(doctor.run_checks(machine))
    assert got["pipeline"].status == "fail" and "unknown pipeline" in got["pipeline"].detail


def test_a_busy_osc_port_is_a_problem_a_busy_link_port_a_warning(machine, monkeypatch):
    busy = {7700: "Address already in use", 5555: "Address already in use"}
    monkeypatch.setattr(doctor, "port_free", lambda host, port, kind: busy.get(port))
    checks = doctor.run_checks(machine)
    got = _by_name(checks)
    assert got["OSC UDP 7700"].status == "fail" and "--osc-port" in got["OSC UDP 7700"].fix
    assert got["OSCQuery TCP 7701"].status == "ok"
    assert got["engine link TCP 5555"].status == "warn"
    assert doctor.exit_code(checks) == 1


def test_port_probe_sees_a_real_bound_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert doctor.port_free("127.0.0.1", port, "udp") is not None
    assert doctor.port_free("127.0.0.1", port, "udp") is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert doctor.port_free("127.0.0.1", s.getsockname()[1], "tcp") is not None


@pytest.mark.parametrize("plat, ok_name, other", [("win32", "Spout", "Syphon"), ("darwin", "Syphon", "Spout")])
def test_platform_transports(machine, monkeypatch, plat, ok_name, other):
    machine.platform = plat
    got = _by_name(doctor.run_checks(machine))
    assert got[ok_name].status == "ok" and got[other].status == "info"
    monkeypatch.setattr(doctor, "module_status", lambda name: "not installed")
    got = _by_name(doctor.run_checks(machine))
    assert got[ok_name].status == "fail" and "pip install" in got[ok_name].fix
    assert got["NDI"].status == "warn" and "pip install --force-reinstall cyndilib" in got["NDI"].fix


def test_no_shared_memory_is_a_problem(machine, monkeypatch):
    monkeypatch.setattr(doctor, "shm_works", lambda: "[Errno 13] Permission denied: '/dev/shm/psm_x'")
    got = _by_name(doctor.run_checks(machine))
    assert got["shm"].status == "fail" and "/dev/shm" in got["shm"].fix


def test_interop_reason_is_shown(machine, monkeypatch):
    monkeypatch.setattr(doctor, "interop_reason", lambda: "PyOpenGL is not importable")
    got = _by_name(doctor.run_checks(machine))["GL interop"]
    assert got.status == "info" and "PyOpenGL" in got.detail


def test_command_prints_the_report_and_exits_by_it(machine, monkeypatch, capsys, tmp_path):
    assert cli.main(["doctor", "--models", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vacelive ") and "GPU and torch" in out and "transports" in out
    monkeypatch.setattr(doctor, "shm_works", lambda: "no /dev/shm")
    assert cli.main(["doctor", "--models", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  shm" in out and "1 problem(s)" in out


def test_real_probes_on_this_machine_do_not_crash(tmp_path):
    checks = doctor.run_checks(doctor.Options(models=str(tmp_path), osc_port=0, oscquery_port=0, link_port=0))
    sections = {c.section for c in checks}
    assert sections == {"GPU and torch", "attention and FP8", "models", "transports"}
    assert _by_name(checks)["shm"].status == "ok"
