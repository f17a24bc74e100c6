"""tools/system-packages, run on a PATH of stand-ins: a machine without the Debian packages the
tests use, where apt-get, sudo and id are small scripts that write down how they were called."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "system-packages"
ALL = "redis-server chromium chromium-driver fonts-noto-color-emoji poppler-utils zbar-tools rclone pgbouncer"
COMMANDS = {"redis-server": "redis-server", "chromium": "chromium", "chromium-driver": "chromedriver",
            "poppler-utils": "pdftoppm", "zbar-tools": "zbarimg", "rclone": "rclone"}
DPKG_ONLY = ("fonts-noto-color-emoji", "pgbouncer")  # no command on the PATH: dpkg-query is asked


def stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """A bare PATH: `id` says who we are (uid file), `dpkg-query` knows the font and pgbouncer only
    once they are installed, `apt-get` logs its arguments, fails `install` as often as the `fail` file says,
    and on success puts a stand-in for each package's command on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (tmp_path / "uid").write_text("0")
    stand_in(bin_dir, "id", f'read uid < {tmp_path}/uid; echo "$uid"')
    stand_in(bin_dir, "dpkg-query", f'[ -f {tmp_path}/dpkg-$3 ] && echo "install ok installed"')
    installs = "\n".join(f'    {package}) printf "#!/bin/sh\\n" > {bin_dir}/{command}; /bin/chmod +x {bin_dir}/{command} ;;'
                         for package, command in COMMANDS.items())
    stand_in(bin_dir, "apt-get", f"""echo "apt-get $*" >> {calls}
[ "$1" = install ] || exit 0
if [ -f {tmp_path}/fail ]; then
  read n < {tmp_path}/fail
  if [ "$n" -gt 0 ]; then echo $((n - 1)) > {tmp_path}/fail; exit 100; fi
fi
for package in "$@"; do
  case "$package" in
{installs}
    {"|".join(DPKG_ONLY)}) : > {tmp_path}/dpkg-$package ;;
  esac
done""")

    def run(*args: str):
        result = subprocess.run(["/bin/sh", str(SCRIPT), *args], env={"PATH": str(bin_dir)},
                                capture_output=True, text=True, timeout=30)
        logged = calls.read_text().splitlines() if calls.exists() else []
        return result, logged

    run.tmp = tmp_path
    run.bin = bin_dir
    return run


def test_root_installs_what_is_missing_without_updating_first(machine):
    result, calls = machine()
    assert result.returncode == 0, result.stderr
    assert calls == [f"apt-get install -y -qq {ALL}"]
    assert result.stdout == f"installing Debian packages the tests need: {ALL}\n"
    # Now everything is there: nothing more is installed, nothing is said.
    again, calls = machine()
    assert again.returncode == 0 and again.stdout == again.stderr == ""
    assert len(calls) == 1


def test_a_failed_install_refreshes_the_package_lists_once_then_installs(machine):
    (machine.tmp / "fail").write_text("1")
    result, calls = machine()
    assert result.returncode == 0, result.stderr
    assert calls == [f"apt-get install -y -qq {ALL}", "apt-get update -qq", f"apt-get install -y -qq {ALL}"]


def test_only_the_missing_packages_of_the_needs_asked_for(machine):
    stand_in(machine.bin, "pdftoppm", "")
    result, calls = machine("redis", "qr")
    assert result.returncode == 0, result.stderr
    assert calls == ["apt-get install -y -qq redis-server zbar-tools"]


def test_dry_run_shows_the_command_and_changes_nothing(machine):
    result, calls = machine("--dry-run")
    assert result.stdout == f"would run: apt-get install -y -qq {ALL}\n" and calls == []


def test_without_root_or_sudo_it_stops_with_one_message_and_the_command(machine):
    (machine.tmp / "uid").write_text("1000")
    stand_in(machine.bin, "sudo", "exit 1")  # sudo that asks for a password fails with -n
    result, calls = machine()
    assert result.returncode == 1 and calls == [] and result.stdout == ""
    assert result.stderr.startswith(f"error: Debian packages needed here are not installed: {ALL}\n")
    assert f"\n    sudo apt-get install -y {ALL}\n" in result.stderr
    assert "sudo asks for a password" in result.stderr and "Traceback" not in result.stderr


def test_sudo_without_a_password_is_used(machine):
    (machine.tmp / "uid").write_text("1000")
    stand_in(machine.bin, "sudo", '[ "$2" = true ] && exit 0; shift; exec "$@"')  # runs it, no -n
    stand_in(machine.bin, "env", 'shift; exec "$@"')    # drops DEBIAN_FRONTEND=...
    result, calls = machine("redis")
    assert result.returncode == 0, result.stderr
    assert calls == ["apt-get install -y -qq redis-server"]


def test_when_apt_cannot_install_it_says_so_and_fails(machine):
    (machine.tmp / "fail").write_text("5")
    result, calls = machine("redis")
    assert result.returncode == 1
    assert calls == ["apt-get install -y -qq redis-server", "apt-get update -qq", "apt-get install -y -qq redis-server"]
    assert "apt-get could not install them" in result.stderr
    assert "sudo apt-get install -y redis-server" in result.stderr


def test_the_real_machine_has_what_the_tests_need():
    """After `make test`'s first step, nothing is missing here: the script finds nothing to do."""
    result = subprocess.run([str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=30,
                            env={**os.environ})
    assert result.returncode == 0 and result.stdout == "", result.stdout
