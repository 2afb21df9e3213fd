"""Multi-host start-up (jax.distributed): flags or SLURM, a bounded wait for peers, and per-host index loading."""

from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import dataclass

from diffcli.errors import DiffcliError, UsageError


@dataclass(frozen=True)
class ClusterConfig:
    coordinator: str  # HOST:PORT of process 0
    num_processes: int
    process_id: int
    source: str  # "flags" or "slurm"


def parse_coordinator(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--coordinator '{text}' is not of the form HOST:PORT.")
    return host, int(port)


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'gpu[03-05,07],cpu1' -> 'gpu03'."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise DiffcliError(f"the SLURM node list '{nodelist}' could not be read.")
    prefix, ranges = m.group(1), m.group(3)
    return prefix if ranges is None else prefix + ranges.split(",")[0].split("-")[0]


def slurm_config(env) -> ClusterConfig | None:
    """The cluster SLURM describes (one task per process), or None outside a multi-task SLURM step."""
    ntasks = int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1)
    if ntasks <= 1 or "SLURM_PROCID" not in env:
        return None
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodes:
        raise DiffcliError("SLURM_NTASKS > 1 but no SLURM node list is set, so the coordinator is unknown.")
    # A port every task derives alike from the job id, unless the user fixes one.
    port = int(env.get("DIFFCLI_COORDINATOR_PORT") or 61000 + int(env.get("SLURM_JOB_ID", "0")) % 4096)
    return ClusterConfig(f"{first_slurm_host(nodes)}:{port}", ntasks, int(env["SLURM_PROCID"]), "slurm")


def resolve_config(coordinator=None, num_processes=None, process_id=None, env=None) -> ClusterConfig | None:
    """Explicit flags (all three) win; otherwise SLURM variables; otherwise None (a single process)."""
    env = os.environ if env is None else env
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise UsageError("multi-host runs need all of --coordinator HOST:PORT, --num-processes N and --process-id I.")
    if all(given):
        parse_coordinator(coordinator)
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise UsageError(f"--process-id {process_id} must be in 0..{num_processes - 1} "
                             f"for --num-processes {num_processes}.")
        return ClusterConfig(coordinator, int(num_processes), int(process_id), "flags")
    return slurm_config(env)


def _watchdog(cfg: ClusterConfig, timeout_s: float, done: threading.Event) -> None:
    # jax aborts (SIGABRT, a C++ stack trace) when peers never join; end first, with one sentence.
    if not done.wait(timeout_s):
        sys.stderr.write(
            f"diffcli: error: process {cfg.process_id} of {cfg.num_processes} waited {timeout_s:g}s at "
            f"{cfg.coordinator} and not every process joined; start all {cfg.num_processes} processes "
            "(same --coordinator) or check that the host and port are reachable.\n"
        )
        sys.stderr.flush()
        os._exit(1)


def start(cfg: ClusterConfig | None, *, timeout_s: float = 120.0) -> bool:
    """Join the cluster (True), or do nothing for a single process (False); a missing peer ends the run in timeout_s."""
    if cfg is None or cfg.num_processes == 1:
        return False
    import jax

    # CPU devices need gloo for cross-process collectives (GPUs use NCCL whatever this says); the backend must
    # not be touched before initialize, so this is set unconditionally.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    done = threading.Event()
    threading.Thread(target=_watchdog, args=(cfg, timeout_s, done), daemon=True).start()
    try:
        jax.distributed.initialize(cfg.coordinator, num_processes=cfg.num_processes, process_id=cfg.process_id,
                                   initialization_timeout=int(timeout_s) + 30)
    except (RuntimeError, ValueError) as exc:
        done.set()
        raise DiffcliError(f"jax.distributed could not start at {cfg.coordinator}: "
                           f"{str(exc).splitlines()[0]}.") from None
    done.set()
    return True


def host_row_range(mesh, n: int, chunk: int) -> tuple[int, int]:
    """Rows [lo, hi) of the index this process must load: the blocks of its own devices in `mesh`."""
    import jax

    from diffcli.parallel.search import geometry

    geom = geometry(n, mesh.size, chunk)
    mine = [j for j, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    if mine != list(range(mine[0], mine[0] + len(mine))):
        raise DiffcliError("this process's devices are not contiguous in the mesh; build it from jax.devices().")
    return geom.part_range(mine[0])[0], geom.part_range(mine[-1])[1]


def host_sharded_denoiser(path: str, *, mesh=None, chunk: int = 2048):
    """The sharded empirical denoiser over the whole cluster, this host reading only its own rows of the index."""
    from diffcli.index.store import index_attrs, read_rows
    from diffcli.parallel.denoiser import ShardedEmpiricalDenoiser
    from diffcli.parallel.mesh import row_mesh

    mesh = row_mesh() if mesh is None else mesh
    n = int(index_attrs(path)["n"])
    lo, hi = host_row_range(mesh, n, chunk)
    rows = read_rows(path, lo, hi)
    return ShardedEmpiricalDenoiser.from_local_rows(rows, n=n, first_row=lo, mesh=mesh, chunk=chunk)

