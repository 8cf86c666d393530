#!/usr/bin/env python3
# extract_onnx_fixtures.py -- turn the ONNX BitNet fixtures into test fixtures for bitnetc.
#
# Reads the TorchScript-exported ONNX models (bitlinear/mlp/block, online/offline/int8)
# from the shared fixture directory and writes into <repo>/tests/fixtures/onnx/:
#   * x.npy, x_q_int8.npy, x_scale.npy and the ORT reference outputs
#     (<module>_<kind>.ts.out.npy), copied byte for byte;
#   * bitlinear.safetensors, mlp.safetensors, block.safetensors with clear names:
#       <proj>.master    f32 [out, in]  master weight (online model, torch Linear layout)
#       <proj>.ternary   i8  [out, in]  values in {-1, 0, 1} (offline / int8 model)
#       <proj>.gamma     f32 [1]        weight_scale of the offline model (= mean|W|)
#       <proj>.inv_gamma f32 [1]        weight_scale of the int8 BitLinear model (= 1/gamma)
#       <norm>.weight    f32 [dim]      RMSNorm weights
# Initializers are identified by following the graph (which MatMul / Mul / RMSNorm
# chain consumes them) and checked by shape. Cross-checks: ternary weights against
# ternary/<proj>.npy (must be exact, else the script fails), gamma / inv_gamma against
# summary.json, norm weights online vs int8, and a numpy re-computation of the
# bitlinear_offline output.
#
# Needs: python3 with numpy, onnx, safetensors (pip install numpy onnx safetensors).
# Run from anywhere:
#   python3 scripts/extract_onnx_fixtures.py [SRC_DIR]
# SRC_DIR defaults to ../shared/fixtures/onnx relative to the repository root.

import argparse
import filecmp
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "fixtures" / "onnx"

COPY_FILES = [
    "x.npy",
    "x_q_int8.npy",
    "x_scale.npy",
    "bitlinear_online.ts.out.npy",
    "bitlinear_offline.ts.out.npy",
    "bitlinear_int8.ts.out.npy",
    "mlp_online.ts.out.npy",
    "mlp_int8.ts.out.npy",
    "block_online.ts.out.npy",
    "block_int8.ts.out.npy",
]

MODULES = {
    # module: (projections, norm weights (clear name -> expected length))
    "bitlinear": (["up_proj"], {}),
    "mlp": (["gate_proj", "up_proj", "down_proj"], {"ffn_sub_norm": 256}),
    "block": (
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        {
            "input_layernorm": 128,
            "post_attention_layernorm": 128,
            "attn_sub_norm": 128,
            "ffn_sub_norm": 256,
        },
    ),
}

PROJ_RE = re.compile(r"\b((?:q|k|v|o|gate|up|down)_proj)\b")


def fail(msg):
    print(f"ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


class Graph:
    """Small helper over an ONNX graph: producers, consumers, initializers."""

    def __init__(self, path):
        self.path = path
        self.model = onnx.load(str(path))
        g = self.model.graph
        self.nodes = list(g.node)
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.producer = {}
        self.consumers = {}
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)

    def users(self, name, op=None):
        return [n for n in self.consumers.get(name, []) if op is None or n.op_type == op]

    def other_input(self, node, name):
        rest = [i for i in node.input if i and i != name]
        return rest[0] if len(rest) == 1 else None

    @staticmethod
    def scope_proj(node):
        """The *_proj module a node belongs to, from its name / output name."""
        for s in (node.name, node.output[0] if node.output else ""):
            m = PROJ_RE.findall(s.replace("/", " ").replace(".", " "))
            if m:
                return m[-1]
        return None

    def follow_to_matmul(self, name, max_depth=12):
        """Walk forward from tensor `name` through single elementwise/transposing
        consumers until a MatMul is reached. Returns (matmul_node, n_transposes)."""
        transposes = 0
        cur = name
        for _ in range(max_depth):
            users = self.consumers.get(cur, [])
            mm = [u for u in users if u.op_type == "MatMul"]
            if mm:
                if len(mm) != 1:
                    fail(f"{self.path.name}: {cur} feeds {len(mm)} MatMuls")
                if mm[0].input[1] != cur:
                    fail(f"{self.path.name}: weight path {cur} is not the MatMul's B input")
                return mm[0], transposes
            # follow the weight-quantization chain: Mul(W, scale) -> Round -> Clip -> Div -> Transpose
            nxt = [u for u in users if u.op_type in ("Mul", "Round", "Clip", "Div", "Transpose", "Cast")
                   and u.input[0] == cur]
            if len(nxt) != 1:
                return None, transposes
            n = nxt[0]
            if n.op_type == "Transpose":
                perm = [a for a in n.attribute if a.name == "perm"]
                if perm and list(perm[0].ints) != [1, 0]:
                    fail(f"{self.path.name}: unexpected Transpose perm {list(perm[0].ints)}")
                transposes += 1
            cur = n.output[0]
        return None, transposes

    def is_rmsnorm_output(self, name):
        """True if tensor `name` is x * (1 / sqrt(mean(x^2) + eps)) (or x / sqrt(...))."""
        p = self.producer.get(name)
        if p is None or p.op_type != "Mul":
            return False
        for i in p.input:
            q = self.producer.get(i)
            if q is None:
                continue
            if q.op_type in ("Div", "Reciprocal") and any(
                (self.producer.get(j) is not None and self.producer[j].op_type == "Sqrt") for j in q.input
            ):
                return True
        return False


def proj_of_matmul(g, mm, default):
    p = g.scope_proj(mm)
    if p is None:
        if default is None:
            fail(f"{g.path.name}: cannot tell which projection MatMul {mm.name} is")
        p = default
    return p


def extract_online(g, projs):
    """Master weights: rank-2 initializers that feed (through the ternarization chain)
    the B input of a MatMul. Returns {proj: (array [out,in], init_name)}."""
    default = projs[0] if len(projs) == 1 else None
    out = {}
    for name, arr in g.inits.items():
        if arr.ndim != 2 or not g.users(name, "Abs"):
            continue
        mm, nt = g.follow_to_matmul(name)
        if mm is None:
            continue
        proj = PROJ_RE.findall(name.replace(".", " "))
        proj = proj[-1] if proj else proj_of_matmul(g, mm, default)
        # MatMul(x, B) computes x @ B with B [in, out]; torch layout is [out, in].
        w = arr if nt % 2 == 1 else arr.T
        if proj in out:
            fail(f"{g.path.name}: two master weights for {proj}")
        out[proj] = (np.ascontiguousarray(w.astype(np.float32)), name)
    return out


def const_b_matmuls(g, default):
    """MatMuls whose B input is an initializer (the ternary weight) -> {proj: (mm, name)}."""
    out = {}
    for mm in g.nodes:
        if mm.op_type == "MatMul" and mm.input[1] in g.inits:
            proj = proj_of_matmul(g, mm, default)
            if proj in out:
                fail(f"{g.path.name}: two constant-weight MatMuls for {proj}")
            out[proj] = (mm, mm.input[1])
    return out


def ternary_from(g, name):
    b = g.inits[name]
    vals = np.unique(b)
    if not set(vals.tolist()) <= {-1.0, 0.0, 1.0}:
        fail(f"{g.path.name}: {name} is not ternary: {vals[:8]}")
    # MatMul B is [in, out]; transpose to [out, in].
    return np.ascontiguousarray(b.T.astype(np.int8))


def scalar_init(g, tensor):
    if tensor in g.inits and g.inits[tensor].size == 1:
        return tensor
    return None


def extract_offline(g, projs):
    """Offline: y = MatMul(xq, T) * weight_scale -> {proj: (ternary, t_name, gamma, g_name)}."""
    default = projs[0] if len(projs) == 1 else None
    out = {}
    for proj, (mm, tname) in const_b_matmuls(g, default).items():
        gname = None
        for u in g.users(mm.output[0], "Mul"):
            gname = scalar_init(g, g.other_input(u, mm.output[0]))
            if gname:
                break
        if gname is None:
            fail(f"{g.path.name}: no weight_scale Mul after MatMul of {proj}")
        out[proj] = (ternary_from(g, tname), tname,
                     g.inits[gname].astype(np.float32).reshape(1), gname)
    return out


def extract_int8(g, projs):
    """int8: y = MatMul(cast(xq), T) / (weight_scale * s_x) -> {proj: (ternary, t_name, inv_gamma, name)}."""
    default = projs[0] if len(projs) == 1 else None
    out = {}
    for proj, (mm, tname) in const_b_matmuls(g, default).items():
        gname = None
        for u in g.users(mm.output[0], "Div"):
            if u.input[0] != mm.output[0]:
                continue
            den = g.producer.get(u.input[1])
            if den is not None and den.op_type == "Mul":
                for i in den.input:
                    gname = gname or scalar_init(g, i)
        if gname is None:
            fail(f"{g.path.name}: no weight_scale in the Div after MatMul of {proj}")
        out[proj] = (ternary_from(g, tname), tname,
                     g.inits[gname].astype(np.float32).reshape(1), gname)
    return out


def extract_norms(g, expected):
    """1-D initializers multiplied onto an RMSNorm-normalized tensor."""
    out = {}
    for name, arr in g.inits.items():
        if arr.ndim != 1 or arr.size <= 1:
            continue
        muls = g.users(name, "Mul")
        if len(muls) != 1 or not g.is_rmsnorm_output(g.other_input(muls[0], name)):
            continue
        clear = name.split(".")[-1] if name.split(".")[-1] != "weight" else name.split(".")[-2]
        if clear not in expected:
            fail(f"{g.path.name}: unexpected norm initializer {name}")
        if arr.shape != (expected[clear],):
            fail(f"{g.path.name}: norm {name} has shape {arr.shape}, expected ({expected[clear]},)")
        out[clear] = (arr.astype(np.float32), name)
    missing = set(expected) - set(out)
    if missing:
        fail(f"{g.path.name}: norm weights not found: {sorted(missing)}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src", nargs="?", default=str(REPO / ".." / "shared" / "fixtures" / "onnx"))
    args = ap.parse_args()
    src = Path(args.src).resolve()
    summary = json.loads((src / "summary.json").read_text())
    gammas = summary["gammas"]
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    # 1. byte-for-byte copies
    for f in COPY_FILES:
        shutil.copyfile(src / f, OUT_DIR / f)
        if not filecmp.cmp(src / f, OUT_DIR / f, shallow=False):
            fail(f"copy of {f} differs")
    print(f"copied {len(COPY_FILES)} files to {OUT_DIR.relative_to(REPO)}")

    ternary_ref = {p: np.load(src / "ternary" / f"{p}.npy") for p in gammas}

    rows = []  # (file, name, shape, dtype, source)
    max_dev = {"ternary_mismatch": 0, "gamma_vs_summary": 0.0, "inv_gamma_vs_summary_s": 0.0,
               "gamma*inv_gamma-1": 0.0, "master_vs_other_modules": 0.0}
    masters_seen = {}
    bitlinear_T = bitlinear_gamma = None

    for module, (projs, norm_expected) in MODULES.items():
        g_on = Graph(src / f"{module}_online.ts.onnx")
        g_i8 = Graph(src / f"{module}_int8.ts.onnx")
        online = extract_online(g_on, projs)
        int8 = extract_int8(g_i8, projs)
        offline = extract_offline(Graph(src / f"{module}_offline.ts.onnx"), projs) \
            if (src / f"{module}_offline.ts.onnx").exists() else {}
        for what, d in (("online", online), ("int8", int8)):
            if set(d) != set(projs):
                fail(f"{module} {what}: found projections {sorted(d)}, expected {sorted(projs)}")

        tensors = {}
        src_names = {}
        for p in projs:
            out_f, in_f = gammas[p]["shape_out_in"]
            master, mname = online[p]
            tern, tname, inv_gamma, iname = int8[p]
            tsrc = f"{module}_int8.ts:{tname}^T"
            if p in offline:
                t_off, t_off_name, gamma, gname = offline[p]
                if not np.array_equal(t_off, tern):
                    fail(f"{module}.{p}: offline and int8 ternary weights differ")
                tern, tsrc = t_off, f"{module}_offline.ts:{t_off_name}^T"
                gsrc = f"{module}_offline.ts:{gname}"
            else:
                gamma = np.array([gammas[p]["gamma"]], dtype=np.float32)
                gsrc = "summary.json gammas (no offline model)"
            if master.shape != (out_f, in_f) or tern.shape != (out_f, in_f):
                fail(f"{module}.{p}: shapes {master.shape} / {tern.shape}, expected {(out_f, in_f)}")
            ndiff = int((tern != ternary_ref[p]).sum())
            max_dev["ternary_mismatch"] = max(max_dev["ternary_mismatch"], ndiff)
            if ndiff:
                fail(f"{module}.{p}: ternary differs from ternary/{p}.npy in {ndiff} entries")
            # ternary re-derived from master the way the graph does: round(W * (1/clip(mean|W|)))
            w_scale = np.float32(1.0) / np.maximum(np.abs(master).mean(dtype=np.float32), np.float32(1e-5))
            t_master = np.clip(np.round(master * w_scale), -1, 1).astype(np.int8)
            if not np.array_equal(t_master, tern):
                print(f"WARNING: {module}.{p}: ternary re-derived from master differs in "
                      f"{int((t_master != tern).sum())} entries")
            max_dev["gamma_vs_summary"] = max(max_dev["gamma_vs_summary"],
                                              abs(float(gamma[0]) - gammas[p]["gamma"]))
            max_dev["inv_gamma_vs_summary_s"] = max(max_dev["inv_gamma_vs_summary_s"],
                                                    abs(float(inv_gamma[0]) - gammas[p]["s"]))
            max_dev["gamma*inv_gamma-1"] = max(max_dev["gamma*inv_gamma-1"],
                                               abs(float(gamma[0]) * float(inv_gamma[0]) - 1.0))
            if p in masters_seen:
                max_dev["master_vs_other_modules"] = max(
                    max_dev["master_vs_other_modules"], float(np.abs(masters_seen[p] - master).max()))
            masters_seen[p] = master
            for suffix, arr, s in (("master", master, f"{module}_online.ts:{mname}"),
                                   ("ternary", tern, tsrc),
                                   ("gamma", gamma, gsrc),
                                   ("inv_gamma", inv_gamma, f"{module}_int8.ts:{iname}")):
                tensors[f"{p}.{suffix}"] = np.ascontiguousarray(arr)
                src_names[f"{p}.{suffix}"] = s
            if module == "bitlinear":
                bitlinear_T, bitlinear_gamma = tern, gamma

        norms_on = extract_norms(g_on, norm_expected)
        norms_i8 = extract_norms(g_i8, norm_expected)
        for k, (arr, name) in norms_on.items():
            if not np.array_equal(arr, norms_i8[k][0]):
                fail(f"{module}: norm {k} differs between online and int8 models")
            tensors[f"{k}.weight"] = arr
            src_names[f"{k}.weight"] = f"{module}_online.ts:{name} (== int8)"

        fname = f"{module}.safetensors"
        save_file(tensors, str(OUT_DIR / fname), metadata={"source": "scripts/extract_onnx_fixtures.py"})
        (OUT_DIR / fname).chmod(0o644)
        for k in tensors:
            rows.append((fname, k, tuple(tensors[k].shape), str(tensors[k].dtype), src_names[k]))

    print(f"\n{'file':<22}{'tensor':<32}{'shape':<12}{'dtype':<9}source")
    for r in rows:
        print(f"{r[0]:<22}{r[1]:<32}{str(list(r[2])):<12}{r[3]:<9}{r[4]}")
    print("\ncross-checks (max deviations):")
    for k, v in max_dev.items():
        print(f"  {k:<26} {v}")
    print("  norm weights online vs int8: identical")

    # 3. numpy sanity check of bitlinear_offline
    x = np.load(src / "x.npy").astype(np.float32)
    m = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-5))
    s = (np.float32(127.0) / m).astype(np.float32)
    xq = np.clip(np.round(x * s), -128, 127).astype(np.float32)  # np.round = half to even
    acc = xq @ bitlinear_T.T.astype(np.float32)                  # exact in f32
    y = (acc / s * bitlinear_gamma[0]).astype(np.float32)
    ref = np.load(src / "bitlinear_offline.ts.out.npy")
    rel = float(np.abs(y - ref).max() / np.abs(ref).max())
    xq_ref = np.load(src / "x_q_int8.npy")
    print(f"\nnumpy bitlinear_offline: max|y-ref|/max|ref| = {rel:.3e} "
          f"(max|ref| = {float(np.abs(ref).max()):.4f}); x_q == x_q_int8.npy: "
          f"{bool(np.array_equal(xq.astype(np.int8), xq_ref))}; "
          f"max|s - x_scale| = {float(np.abs(s - np.load(src / 'x_scale.npy')).max()):.3e}")
    print("done")


if __name__ == "__main__":
    main()
