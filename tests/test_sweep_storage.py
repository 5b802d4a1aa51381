"""sweep.storage / sweep.study against a real PostgreSQL server: a throwaway one started here
(initdb into a temporary folder, a free port on 127.0.0.1, password authentication), two `aether`
sweeps in two processes filling one study, the password in no file and no output; an
unreachable server, a missing driver and an unsupported URL fail in one clear line."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
import yaml

from tests.conftest import AETHER, make_folder

SECRET = "s3cr3t-Pa55"  # the server's password: it must show up nowhere
# the tiny test ViT at 16 px, a couple of batches: one trial is a few seconds
TINY = ["+recipe=vit_lora", "data=imgs", "model=test_vit", "data.image_size=16", "data.batch_size=8",
        "data.num_workers=0", "trainer.progress=plain", "trainer.early_stopping.enabled=false",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1"]


def _pg_bin() -> Optional[Path]:
    """Debian's PostgreSQL (/usr/lib/postgresql/N/bin) or initdb/pg_ctl on PATH."""
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(cand) / "initdb").is_file() and (Path(cand) / "pg_ctl").is_file():
            return Path(cand)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.prefix: List[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as its own account (or nobody)
            user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
            if user is None or shutil.which("runuser") is None:
                pytest.skip("running as root without a `postgres`/`nobody` account or runuser to start PostgreSQL")
            self.prefix = ["runuser", "-u", user, "--"]
            self.uid = pwd.getpwnam(user).pw_uid
        # in /tmp, not $TMPDIR or pytest's folders, which the server's account may not be able to enter
        self.dir = Path(tempfile.mkdtemp(prefix="aether-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
        if self.prefix:
            os.chown(self.dir, self.uid, -1)
        self.port = _free_port()

    def _run(self, *cmd: str) -> None:
        r = subprocess.run([*self.prefix, *cmd], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{' '.join(cmd)}: {r.stdout}{r.stderr}"

    def start(self) -> None:
        pw = self.dir / "pw"
        pw.write_text(SECRET + "\n")
        if self.prefix:
            os.chown(pw, self.uid, -1)
        self._run(str(self.bindir / "initdb"), "-D", str(self.dir / "data"), "-U", "aether", f"--pwfile={pw}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")
        pw.unlink()
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w",
                  "-t", "30", "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off",
                  "start")

    def stop(self) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)")
    srv = Server(bindir)
    try:
        srv.start()
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=srv.port, user="aether", password=SECRET, dbname="postgres",
                             autocommit=True, connect_timeout=5) as conn:
            conn.execute("CREATE DATABASE optuna")
        yield srv
    finally:
        srv.stop()


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    env["PGPASSFILE"] = os.devnull  # the password can only come from the URL
    return env


def test_two_sweeps_on_two_processes_fill_one_postgres_study(server: Server, tmp_path: Path) -> None:
    import optuna

    make_folder(tmp_path / "imgs", per_class=6)
    url = f"postgresql://aether:{SECRET}@127.0.0.1:{server.port}/optuna"
    procs = []
    for i in range(2):
        args = [AETHER, *TINY, "+sweep=lora_optuna", "sweep.n_trials=2", f"sweep.storage={url}",
                "sweep.study=shared", f"hydra.sweep.dir={tmp_path / f'sweep{i}'}"]
        out = open(tmp_path / f"out{i}.log", "w")
        procs.append((subprocess.Popen(args, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=_env()), out))
    logs = []
    for p, out in procs:
        p.wait(timeout=400)
        out.close()
        logs.append(Path(out.name).read_text())
        assert p.returncode == 0, logs[-1][-3000:]

    study = optuna.load_study(study_name="shared", storage=f"postgresql+psycopg://aether:{SECRET}@127.0.0.1:"
                              f"{server.port}/optuna")
    trials = study.get_trials()
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    by_sweep: dict = {}
    for t in trials:
        by_sweep.setdefault(t.user_attrs["sweeper"], []).append(t.number)
    assert sorted(len(v) for v in by_sweep.values()) == [2, 2]  # each process ran its own two trials
    for i in range(2):
        sweep = tmp_path / f"sweep{i}"
        own = next(v for k, v in by_sweep.items() if k.endswith(str(sweep)))
        assert sorted(int(p.parent.name) for p in sweep.glob("*/metrics.json")) == sorted(own)  # folder = trial
        cfg = yaml.safe_load((sweep / str(own[0]) / "config.yaml").read_text())
        assert cfg["sweep"]["storage"] == f"postgresql://aether@127.0.0.1:{server.port}/optuna"  # no password
        assert cfg["sweep"]["study"] == "shared"
        assert "password is taken out of the URL" in logs[i] and "aether:***@127.0.0.1" in logs[i]
    # the summary of the sweep that ended last lists every trial of the study
    counts = [len(yaml.safe_load((tmp_path / f"sweep{i}" / "summary.json").read_text())["trials"]) for i in range(2)]
    assert max(counts) == 4
    # the password is in no log, config, override list, summary or report
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_storage_errors_are_one_clear_line(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    from aether.cli import main
    from aether.config.hydra_setup import compose_run
    from aether.config.validate import ConfigError, validate
    from aether.errors import AetherError
    from aether.sweeps.study import rdb_storage

    # a server that does not listen: the sweep fails before anything runs, in seconds, password masked
    make_folder(tmp_path / "imgs", per_class=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["aether"])
    monkeypatch.setenv("PGPASSFILE", os.devnull)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as code:
        main([*TINY, "+sweep=lora_optuna", f"sweep.storage=postgresql://aether:{SECRET}@127.0.0.1:{_free_port()}/x",
              f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert code.value.code == 2 and "Traceback" not in err, err
    assert os.environ.pop("PGPASSWORD") == SECRET  # where the URL's password went
    line = next(x for x in err.splitlines() if x.startswith("aether: error:"))
    assert line.startswith("aether: error: sweep.storage=postgresql://aether@127.0.0.1:")
    assert "cannot open the study's PostgreSQL database" in line and "refused" in line
    assert SECRET not in err and not (tmp_path / "sweep").exists()
    # the right server, the wrong password: masked in the message
    with pytest.raises(AetherError, match=r"aether:\*\*\*@.*password authentication failed"):
        rdb_storage(f"postgresql://aether:wrong@127.0.0.1:{server.port}/optuna")
    # a URL of another database: refused, naming the key, without the password
    raw, _ = compose_run([*(a if a != "data=imgs" else "data.path=imgs" for a in TINY), "+sweep=lora_optuna"])
    raw["sweep"]["storage"] = f"mysql://aether:{SECRET}@db/optuna"
    with pytest.raises(ConfigError) as bad:
        validate(raw)
    assert "sweep.storage = 'mysql://aether:***@db/optuna': unsupported storage" in str(bad.value)
    assert "postgresql://USER@HOST:PORT/DB" in str(bad.value) and SECRET not in str(bad.value)
    # without the driver: the extra to install
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(AetherError, match=r"pip install 'aether\[postgres\]'"):
        rdb_storage(f"postgresql://aether@127.0.0.1:{server.port}/optuna")
