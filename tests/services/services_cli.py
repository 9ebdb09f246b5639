"""``mirrorscope services up|down|status``: Apache Kafka (KRaft, one node), Redis and moto (AWS
APIs) on this machine, for trying the distributed mode without a cluster.

``up`` starts each as a detached process (its own session: it outlives the command), records
them in DIR/services.json and prints their addresses and ``export`` lines; ``down`` stops
them; ``status`` says which answer. DIR/ports.json (kept by ``down``) makes a later ``up``
reuse the same ports when they are free, so the printed addresses stay the same.

Only click and the standard library are imported at module level (``mirrorscope --help``
stays quick); the launchers load when a command runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

SERVICES = ("kafka", "redis", "moto")
# One per result kind (schemas/kinds.py; tests/test_services_cli.py checks the topics `up`
# makes against it): written out, since only click and the standard library load here.
RESULT_TOPICS = ("mirrorscope.flows", "mirrorscope.http", "mirrorscope.alerts",
                 "mirrorscope.dns", "mirrorscope.tls", "mirrorscope.ssh")
STATE = "services.json"
PORTS = "ports.json"
STATE_VERSION = 1


def default_dir() -> Path:
    return Path(os.environ.get("MIRRORSCOPE_SERVICES_DIR")
                or Path.home() / ".cache" / "mirrorscope" / "services")


# ---------------------------------------------------------------------------------------------
# processes recorded in services.json


def _proc_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat (R, S, Z ...), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def proc_alive(entry: dict) -> bool:
    """The recorded process still runs (a zombie does not) and is still ours: its command line
    holds every string of ``entry["match"]`` (a reused pid is not)."""
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    state = _proc_state(pid)
    if state is None or state in "ZX":
        return False
    cmd = _cmdline(pid)
    return all(m in cmd for m in entry.get("match", []))


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind: a port whose last connections wait in TIME_WAIT after a stop is
        # free for them, and a restarted service keeps its address (a listener still fails).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not port_answers(port)


def _signal(pid: int, sig: int) -> None:
    """``sig`` to the process group the launcher created (start_new_session), else the pid."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_process(entry: dict, timeout: float) -> str:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns what happened."""
    if not proc_alive(entry):
        return "was not running"
    pid = entry["pid"]
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc_alive(entry):
            how = "stopped"
            break
        time.sleep(0.1)
    else:
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while proc_alive(entry) and time.monotonic() < deadline:
            time.sleep(0.05)
        how = "killed (it did not stop on SIGTERM)"
    ports = [entry[k] for k in ("port", "controller_port") if isinstance(entry.get(k), int)]
    deadline = time.monotonic() + 5
    while any(port_answers(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.05)
    return how


# ---------------------------------------------------------------------------------------------
# the state files


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path} is unreadable ({exc}); remove it and try again")
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    """One ``up``/``down`` at a time per folder."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def environment(state: dict) -> dict[str, str]:
    """The variables MirrorScope's components read, for the services in ``state``."""
    sv = state.get("services", {})
    env: dict[str, str] = {}
    if "kafka" in sv:
        k = sv["kafka"]
        env["MIRRORSCOPE_TRANSPORT"] = "kafka"
        env["MIRRORSCOPE_KAFKA_BOOTSTRAP"] = k["bootstrap"]
        topic = state.get("packet_topic")
        if topic:
            env["MIRRORSCOPE_TOPIC_PACKETS"] = topic
            parts = state.get("topics", {}).get(topic)
            if parts:
                env["MIRRORSCOPE_PARTITIONS"] = str(parts)
    if "redis" in sv:
        env["MIRRORSCOPE_REDIS_URL"] = sv["redis"]["url"]
    if "moto" in sv:
        from .moto_service import CREDENTIALS
        url = sv["moto"]["url"]
        env["AWS_ENDPOINT_URL"] = url
        env["MIRRORSCOPE_S3_ENDPOINT_URL"] = url
        env["MIRRORSCOPE_CLOUDWATCH_ENDPOINT_URL"] = url
        env.update(CREDENTIALS)
    return env


def _export_lines(env: dict[str, str]) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in env.items()]


def _service_status(name: str, entry: dict) -> str:
    if not proc_alive(entry):
        return "down"
    return "up" if port_answers(entry["port"]) else "not answering"


# ---------------------------------------------------------------------------------------------
# starting


def _missing_prerequisites(names: list[str]) -> list[str]:
    problems = []
    if "kafka" in names:
        from .kafka_service import jar_dir, jars_present
        if shutil.which("java") is None:
            problems.append("kafka: java not found; install Java 17 "
                            "(Debian: apt-get install openjdk-17-jre-headless)")
        if not jars_present():
            problems.append(f"kafka: the Kafka jars are missing in {jar_dir()}: run "
                            "bash .ci/setup.sh in the repository (or set MIRRORSCOPE_KAFKA_JARS "
                            "to a folder holding them)")
    if "redis" in names:
        from .redis_service import redis_server_exe
        if redis_server_exe() is None:
            problems.append("redis: redis-server not found: apt-get install redis-server")
    if "moto" in names:
        from .moto_service import moto_server_exe
        if moto_server_exe() is None:
            problems.append("moto: moto_server not found: pip install 'moto[server]'")
    return problems


def _pick_port(wanted, taken: set[int]) -> int | None:
    """The previous port when it is free now, else None (the launcher picks a free one)."""
    if isinstance(wanted, int) and wanted not in taken and port_free(wanted):
        taken.add(wanted)
        return wanted
    return None


def _launch(name: str, d: Path, ports: dict, timeout: float):
    """Start one service; returns (launcher, state entry)."""
    wd = d / name
    wd.mkdir(parents=True, exist_ok=True)
    if name == "kafka":
        from .kafka_service import LocalKafka
        k = LocalKafka(wd, port=ports.get("port"), controller_port=ports.get("controller_port"))
        try:
            k.start(timeout=timeout)
        except Exception:
            k.stop()
            raise
        return k, {"pid": k.pid, "port": k.port, "controller_port": k.controller_port,
                   "address": k.bootstrap, "bootstrap": k.bootstrap, "workdir": str(wd),
                   "log": str(wd / "broker.log"),
                   "match": ["kafka.Kafka", str(wd / "server.properties")]}
    if name == "redis":
        from .redis_service import LocalRedis
        r = LocalRedis(wd, port=ports.get("port"))
        r.start(timeout=min(timeout, 30))
        return r, {"pid": r.pid, "port": r.port, "address": r.address, "url": r.url,
                   "workdir": str(wd), "log": str(r.log_path),
                   "match": ["redis-server", f":{r.port}"]}
    if name == "moto":
        from .moto_service import MotoServer
        m = MotoServer(wd / "moto.log", port=ports.get("port"))
        m.start(timeout=min(timeout, 60))
        return m, {"pid": m.pid, "port": m.port, "address": f"127.0.0.1:{m.port}", "url": m.url,
                   "workdir": str(wd), "log": str(wd / "moto.log"),
                   "match": ["moto_server", f"-p {m.port}"]}
    raise ValueError(name)


def ensure_topics(bootstrap: str, packet_topic: str, partitions: int) -> tuple[dict, list[str]]:
    """Create the packet topic (``partitions``) and the result topics (as many partitions);
    existing topics are kept as they are. Returns ({topic: partitions}, warnings)."""
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    from .kafka_service import create_topic
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        existing = set(a.list_topics())
    finally:
        a.close()
    for t in (packet_topic, *RESULT_TOPICS):
        if t not in existing:
            try:
                create_topic(bootstrap, t, partitions)
            except TopicAlreadyExistsError:  # pragma: no cover - a race with another client
                pass
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        topics = {}
        for md in a.describe_topics([packet_topic, *RESULT_TOPICS]):
            topics[md.get("name") or md.get("topic")] = len(md.get("partitions") or [])
    finally:
        a.close()
    warnings = []
    have = topics.get(packet_topic)
    if have is not None and have != partitions:
        warnings.append(f"topic {packet_topic} already exists with {have} partitions (not "
                        f"{partitions}); `mirrorscope services down --purge` starts afresh")
    return topics, warnings


# ---------------------------------------------------------------------------------------------
# output


def _summary(state: dict, statuses: dict[str, str] | None = None) -> list[str]:
    sv = state.get("services", {})
    lines = []
    for name in SERVICES:
        if name not in sv:
            continue
        e = sv[name]
        addr = {"kafka": e.get("bootstrap"), "redis": e.get("url"), "moto": e.get("url")}[name]
        st = f"  [{statuses[name]}]" if statuses else ""
        lines.append(f"  {name:<6}{addr:<34} pid {e['pid']:<8} log {e['log']}{st}")
        if name == "kafka" and state.get("topics"):
            lines.append("        topics: " + ", ".join(
                f"{t} ({n})" for t, n in state["topics"].items()))
    return lines


def _print_env(state: dict) -> None:
    click.echo("\nIn your shell (or: eval \"$(mirrorscope services status --env"
               + (f" --dir {shlex.quote(state['dir'])}" if state["dir"] != str(_resolve(None)) else "")
               + ")\"):")
    for line in _export_lines(environment(state)):
        click.echo(line)


# ---------------------------------------------------------------------------------------------
# the commands


_dir_option = click.option(
    "--dir", "dir_", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder for services.json, logs and data [default: $MIRRORSCOPE_SERVICES_DIR or "
         "~/.cache/mirrorscope/services].")


def _resolve(dir_: Path | None) -> Path:
    return (dir_ or default_dir()).expanduser().resolve()


@click.group("services")
def services() -> None:
    """Local Kafka, Redis and moto (AWS APIs) for trying the distributed mode on one machine.

    `up` starts them in the background and prints their addresses and the environment
    variables to use; `status` shows them; `down` stops them."""


@services.command()
@_dir_option
@click.option("--kafka/--no-kafka", default=True, show_default=True,
              help="Apache Kafka (KRaft, one node; needs java and the jars .ci/setup.sh fetches).")
@click.option("--redis/--no-redis", default=True, show_default=True, help="Redis (redis-server).")
@click.option("--moto/--no-moto", default=True, show_default=True,
              help="moto's AWS API server (S3, CloudWatch, Kinesis, EC2).")
@click.option("--packet-topic", default="mirrorscope.packets", show_default=True,
              help="The collectors' topic; created with --partitions partitions.")
@click.option("--partitions", default=4, show_default=True, type=click.IntRange(min=1),
              help="Partitions of the packet topic and the result topics "
                   f"({', '.join(RESULT_TOPICS)}).")
@click.option("--timeout", default=120.0, show_default=True, type=float,
              help="Seconds to wait for each service to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print services.json (plus env) on stdout.")
def up(dir_: Path | None, kafka: bool, redis: bool, moto: bool, packet_topic: str,
       partitions: int, timeout: float, as_json: bool) -> None:
    """Start the services in the background (they keep running after this command)."""
    d = _resolve(dir_)
    wanted = [n for n, on in (("kafka", kafka), ("redis", redis), ("moto", moto)) if on]
    if not wanted:
        raise click.UsageError("nothing to start (every service is --no-...)")
    with _locked(d):
        old = _read_json(d / STATE)
        running = {n: e for n, e in old.get("services", {}).items()
                   if n in SERVICES and proc_alive(e)}
        to_start = [n for n in wanted if n not in running]
        problems = _missing_prerequisites(to_start)
        if problems:
            raise click.ClickException("cannot start:\n  " + "\n  ".join(problems))

        saved_ports = _read_json(d / PORTS)
        taken: set[int] = {p for e in running.values()
                           for p in (e.get("port"), e.get("controller_port")) if p}
        ports = {}
        for n in to_start:
            prev = saved_ports.get(n, {})
            ports[n] = {k: _pick_port(prev.get(k), taken) for k in ("port", "controller_port")}

        started: dict[str, tuple] = {}
        errors: list[str] = []
        if to_start and not as_json:
            click.echo(f"starting {', '.join(to_start)} in {d} ...", err=True)
        # Kafka takes seconds (two JVM starts): the others start meanwhile.
        with ThreadPoolExecutor(max_workers=len(to_start) or 1) as pool:
            futs = {n: pool.submit(_launch, n, d, ports[n], timeout) for n in to_start}
            for n, f in futs.items():
                try:
                    started[n] = f.result()
                except Exception as exc:
                    errors.append(f"{n}: {exc}")
        if errors:
            for launcher, _ in started.values():
                launcher.stop()
            raise click.ClickException("could not start:\n  " + "\n  ".join(errors)
                                       + "\n(the services this command started are stopped "
                                       "again; their logs are in " + str(d) + ")")

        state = {"version": STATE_VERSION, "dir": str(d),
                 "services": {n: (running[n] if n in running else started[n][1])
                              for n in SERVICES if n in running or n in started},
                 "packet_topic": old.get("packet_topic"), "topics": old.get("topics", {}),
                 "started_at": old.get("started_at") if running else None}
        if state["started_at"] is None:
            state["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        warnings: list[str] = []
        if "kafka" in state["services"]:
            try:
                topics, warnings = ensure_topics(state["services"]["kafka"]["bootstrap"],
                                                 packet_topic, partitions)
            except Exception as exc:
                for launcher, _ in started.values():
                    launcher.stop()
                raise click.ClickException(f"kafka: creating the topics failed: {exc}")
            state["packet_topic"] = packet_topic
            state["topics"] = topics
        else:
            state["packet_topic"], state["topics"] = None, {}
        _write_json(d / STATE, state)
        saved_ports.update({n: {k: e[k] for k in ("port", "controller_port") if k in e}
                            for n, e in state["services"].items()})
        _write_json(d / PORTS, saved_ports)

    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    already = [n for n in wanted if n in running]
    if as_json:
        click.echo(json.dumps({**state, "started": list(started), "already_running": already,
                               "env": environment(state)}, indent=2))
        return
    if already:
        click.echo(f"already running (from {d / STATE}): {', '.join(already)}")
    if started:
        click.echo(f"started: {', '.join(started)}")
    click.echo(f"MirrorScope services ({d}):")
    for line in _summary(state):
        click.echo(line)
    _print_env(state)
    click.echo("\nStop them with: mirrorscope services down"
               + (f" --dir {shlex.quote(str(d))}" if d != _resolve(None) else ""))


@services.command()
@_dir_option
@click.option("--purge", is_flag=True,
              help="Also delete the data and logs (Kafka's topics) and the remembered ports.")
@click.option("--timeout", default=30.0, show_default=True, type=float,
              help="Seconds to wait after SIGTERM before SIGKILL.")
def down(dir_: Path | None, purge: bool, timeout: float) -> None:
    """Stop the services `up` started (SIGTERM, then SIGKILL after --timeout)."""
    d = _resolve(dir_)
    if not d.exists():
        click.echo(f"nothing to stop: {d} does not exist")
        return
    with _locked(d):
        state = _read_json(d / STATE)
        sv = state.get("services", {})
        if not sv:
            click.echo(f"nothing to stop: no {STATE} in {d}")
        # Kafka last: a client of it (none here) would otherwise see it go first.
        with ThreadPoolExecutor(max_workers=len(sv) or 1) as pool:
            res = {n: pool.submit(stop_process, e, timeout) for n, e in sv.items()}
            for n, f in res.items():
                click.echo(f"{n}: {f.result()}")
        (d / STATE).unlink(missing_ok=True)
        if purge:
            for n in SERVICES:
                shutil.rmtree(d / n, ignore_errors=True)
            (d / PORTS).unlink(missing_ok=True)
            click.echo(f"purged the data and logs in {d}")


@services.command()
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON on stdout.")
@click.option("--env", "as_env", is_flag=True,
              help="Print only the export lines (for eval) of the services that are up.")
def status(dir_: Path | None, as_json: bool, as_env: bool) -> None:
    """Which services are up, and their addresses. Exits 1 when one recorded is not up."""
    d = _resolve(dir_)
    state = _read_json(d / STATE)
    sv = state.get("services", {})
    statuses = {n: _service_status(n, e) for n, e in sv.items()}
    all_up = bool(sv) and all(s == "up" for s in statuses.values())
    if as_json:
        out = {**state, "dir": str(d), "running": bool(sv) and all_up,
               "status": statuses, "env": environment(state) if sv else {}}
        for n, e in out.get("services", {}).items():
            e["status"] = statuses[n]
        click.echo(json.dumps(out, indent=2))
    elif as_env:
        up_only = {**state, "services": {n: e for n, e in sv.items() if statuses[n] == "up"}}
        for line in _export_lines(environment(up_only)):
            click.echo(line)
    elif not sv:
        click.echo(f"no services running from {d} (start them: mirrorscope services up)")
    else:
        click.echo(f"MirrorScope services ({d}):")
        for line in _summary(state, statuses):
            click.echo(line)
        if not all_up:
            click.echo("\nsome are not up: `mirrorscope services up` starts the missing ones"
                       " (logs above)")
    if sv and not all_up:
        sys.exit(1)
