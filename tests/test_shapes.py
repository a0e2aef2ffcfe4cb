"""HF model config -> block-FP8 linear shapes per TP degree, the tune/probe flags that use it, and
the progress bar. CPU only; the CLIs are called in-process.

The configs below are written from the models' public config.json values (huggingface.co
MiniMaxAI/MiniMax-M2.5 and deepseek-ai/DeepSeek-V3), keeping the keys the shapes depend on.
"""

from __future__ import annotations

import io
import json

import pytest

from rocm_fp8 import kernel_configs
from rocm_fp8.cli import main as cli_main
from rocm_fp8.cli.progress import Progress
from rocm_fp8.cli.shapes import PRESETS, block_fp8_shapes, linear_shapes, resolve, table_shapes

MINIMAX_M25 = {
    "architectures": ["MiniMaxM2ForCausalLM"], "model_type": "minimax_m2",
    "hidden_size": 3072, "num_attention_heads": 48, "num_key_value_heads": 8, "head_dim": 128,
    "intermediate_size": 1536, "num_local_experts": 256, "num_experts_per_tok": 8, "shared_intermediate_size": 0,
    "num_hidden_layers": 62, "vocab_size": 200064,
    "quantization_config": {"quant_method": "fp8", "fmt": "float8_e4m3fn", "weight_block_size": [128, 128],
                            "activation_scheme": "dynamic"},
}
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
    "num_hidden_layers": 61, "vocab_size": 129280,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],
                            "activation_scheme": "dynamic"},
}


def test_minimax_m25_reproduces_its_presets():
    assert block_fp8_shapes(MINIMAX_M25, tp=4)[0] == PRESETS["minimax-m2.5-tp4"]
    names = {lin.name: lin.shape for lin in linear_shapes(MINIMAX_M25, tp=4)}
    assert names == {"qkv_proj": (2048, 3072), "o_proj": (3072, 1536), "experts.w13": (768, 3072),
                     "experts.w2": (3072, 384)}
    ep = {lin.name: lin.shape for lin in linear_shapes(MINIMAX_M25, tp=4, ep=True)}
    assert [ep["experts.w13"], ep["experts.w2"]] == PRESETS["minimax-m2.5-ep"]
    tp1 = {lin.name: lin.shape for lin in linear_shapes(MINIMAX_M25, tp=1)}
    assert [tp1["qkv_proj"], tp1["o_proj"]] == PRESETS["minimax-m2.5-tp1"]


def test_deepseek_v3_reproduces_its_presets_plus_the_layers_they_leave_out():
    tp1, dropped = block_fp8_shapes(DEEPSEEK_V3, tp=1)
    assert not dropped
    # the preset lists attention (MLA) and the experts; the config also has the 3 dense MLP layers
    assert set(PRESETS["deepseek-v3-tp1"]) <= set(tp1)
    assert set(tp1) - set(PRESETS["deepseek-v3-tp1"]) == {(36864, 7168), (7168, 18432)}
    tp8 = block_fp8_shapes(DEEPSEEK_V3, tp=8)[0]
    assert set(PRESETS["deepseek-v3-tp8"]) <= set(tp8)
    # q_a/kv_a are replicated (not split by TP): the same (2112, 7168) at every TP degree
    assert set(tp8) - set(PRESETS["deepseek-v3-tp8"]) == {(2112, 7168)}
    names = {lin.name: lin.shape for lin in linear_shapes(DEEPSEEK_V3, tp=8)}
    assert names["kv_b_proj"] == (4096, 512) and names["shared_experts.gate_up_proj"] == (512, 7168)


def test_gqa_kv_heads_are_replicated_when_tp_exceeds_them():
    cfg = dict(MINIMAX_M25)
    qkv = {tp: next(lin for lin in linear_shapes(cfg, tp) if lin.name == "qkv_proj").n for tp in (1, 8, 16)}
    assert qkv == {1: (48 + 16) * 128, 8: (6 + 2) * 128, 16: (3 + 2) * 128}


def test_dense_model_and_multimodal_text_config():
    dense = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336}
    assert block_fp8_shapes({"text_config": dense, "vision_config": {}}, tp=2)[0] == [
        (3072, 4096), (4096, 2048), (14336, 4096), (4096, 7168)]


def test_bad_configs_and_tp_are_named():
    with pytest.raises(ValueError, match="tp: expected a positive integer, got 0"):
        linear_shapes(MINIMAX_M25, tp=0)
    with pytest.raises(ValueError, match=r"tp: num_attention_heads \(48\) is not divisible by the TP degree 5"):
        linear_shapes(MINIMAX_M25, tp=5)
    with pytest.raises(ValueError, match="config: expected 'hidden_size' and 'num_attention_heads'"):
        linear_shapes({"vision_config": {}})
    with pytest.raises(ValueError, match="--tp: only applies to --from-config"):
        resolve(presets=["minimax-m2.5-tp4"], tps=[4])
    odd = {"hidden_size": 2880, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
           "intermediate_size": 2880}
    shapes, dropped = block_fp8_shapes(odd, tp=1)
    assert shapes == [(2880, 4096)]  # o_proj; the others have K = 2880, not a multiple of 128
    assert {d.name for d in dropped} == {"qkv_proj", "mlp.gate_up_proj", "mlp.down_proj"}


def test_table_shapes_are_the_shipped_h100_tables():
    want = list(kernel_configs.read_table(kernel_configs.CONFIG_DIR / "nvidia_h100_80gb_hbm3.json").shapes)
    assert len(want) == 12
    assert table_shapes("nvidia_h100_80gb_hbm3") == want == table_shapes("NVIDIA H100 80GB HBM3")
    with pytest.raises(ValueError, match="--table-shapes: expected a kernel table file or a table name"):
        table_shapes("nvidia_b300")


# -- the CLIs, in-process -------------------------------------------------------------------------------

@pytest.fixture
def hf_configs(tmp_path):
    mm, ds = tmp_path / "minimax.json", tmp_path / "deepseek.json"
    mm.write_text(json.dumps(MINIMAX_M25))
    ds.write_text(json.dumps(DEEPSEEK_V3))
    return mm, ds


def test_tune_flags_resolve_shapes(hf_configs):
    from rocm_fp8.tune.cli import parse_args

    mm, ds = hf_configs
    args = parse_args(["--from-config", str(mm), "--tp", "4"])
    assert args.shapes == PRESETS["minimax-m2.5-tp4"]
    args = parse_args(["--from-config", str(ds), "--tp", "8", "--preset", "minimax-m2.5-tp4", "--n", "256",
                       "--k", "512"])
    assert args.shapes[0] == (256, 512) and args.shapes[1:5] == PRESETS["minimax-m2.5-tp4"]
    assert set(PRESETS["deepseek-v3-tp8"]) <= set(args.shapes)
    args = parse_args(["--table-shapes", "nvidia_h100_80gb_hbm3"])
    assert len(args.shapes) == 12


@pytest.mark.parametrize("argv,message", [
    (["tune"], "shapes: expected --n N --k K, --preset NAME"),
    (["tune", "--n", "256"], "--n/--k: expected as many --n as --k"),
    (["tune", "--preset", "minimax-m2.5-tp4", "--tp", "4"], "--tp: only applies to --from-config"),
    (["tune", "--from-config", "/nonexistent/config.json"], "a path that does not exist"),
    (["tune", "--preset", "llama"], "invalid choice: 'llama'"),
    (["tune", "--n", "256", "--k", "512", "--tp", "0"], "expected positive integers, got 0"),
])
def test_tune_flag_errors_name_the_flag(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_tune_without_a_gpu_says_so(capsys, hf_configs):
    assert cli_main(["tune", "--from-config", str(hf_configs[0]), "--tp", "4"]) == 2
    assert "no GPU is visible" in capsys.readouterr().err


def test_probe_takes_hf_configs_and_refuses_timing_without_a_gpu(capsys, hf_configs):
    mm, _ = hf_configs
    assert cli_main(["probe", "--from-config", str(mm), "--tp", "4", "--static", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {(r["n"], r["k"]) for r in report["results"]} == set(PRESETS["minimax-m2.5-tp4"])
    assert cli_main(["probe", "--from-config", str(mm), "--tp", "4", "--static", "--timing"]) == 2
    assert "--timing: a --static report runs nothing" in capsys.readouterr().err
    assert cli_main(["probe", "--n", "256", "--k", "512", "--backend", "reference", "--timing", "--no-cache"]) == 2
    assert "--timing: measuring speed needs a GPU" in capsys.readouterr().err


# -- progress ---------------------------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_plain_lines_with_an_eta_when_not_a_terminal():
    out, clock = io.StringIO(), _Clock()
    bar = Progress(4, "tune", stream=out, clock=clock)
    assert not bar.tty
    clock.t += 30
    bar.advance(1, "N=2048 K=3072 M=1")
    bar.note("a message")
    clock.t += 30
    bar.advance(1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("tune [#######.....................]  25.0%  0:30 elapsed, ETA 1:30  N=2048")
    assert lines[1] == "a message"
    assert "50.0%  1:00 elapsed, ETA 1:00" in lines[2]
    assert "\r" not in out.getvalue()


def test_progress_redraws_one_line_on_a_terminal():
    out, clock = io.StringIO(), _Clock()
    bar = Progress(2, stream=out, tty=True, clock=clock)
    bar.advance(1)
    bar.note("msg")
    bar.advance(1)
    bar.close()
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 3 and "msg\n" in text and text.endswith("\n")
    with pytest.raises(ValueError, match="total: expected a positive amount of work, got 0"):
        Progress(0)


def test_the_bench_preset_is_bench_gemms_shape_list():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gemm.py"
    spec = importlib.util.spec_from_file_location("bench_gemm", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert PRESETS["bench"] == list(bench.SHAPES.values())
