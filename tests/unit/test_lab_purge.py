"""`billkit down --purge`: the hosts' disks go, and with them everything made for those hosts (a key
store or certificates for a cluster that no longer exists would stop the next `up`); the base image,
the apt cache and the records stay. Nothing outside the lab folder is touched."""

from __future__ import annotations

from pathlib import Path

from billkit.lab.pipeline import PURGE_KEEPS, purge_state

MADE_FOR_THE_HOSTS = ("hosts", "vault", "pki", "db", "backup", "app", "ssh", "group_vars", "ansible-tmp",
                      "inventory.yml", "backup.vars.yml", "nftables.conf")  # fmt: skip


def test_purge_deletes_the_hosts_state_and_keeps_the_images_caches_and_records(tmp_path: Path) -> None:
    lab = tmp_path / ".lab"
    for name in (*MADE_FOR_THE_HOSTS, *PURGE_KEEPS):
        path = lab / name
        if "." in name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
        else:
            (path / "inner").mkdir(parents=True)
            (path / "inner" / "file").write_text("x")
    gone = purge_state(lab)
    assert sorted(gone) == sorted(MADE_FOR_THE_HOSTS)
    assert sorted(p.name for p in lab.iterdir()) == sorted(PURGE_KEEPS)
    assert (lab / "base" / "inner" / "file").exists() and (lab / "evidence" / "inner" / "file").exists()


def test_purge_removes_a_link_without_following_it(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "keep").mkdir(parents=True)
    lab = tmp_path / ".lab"
    lab.mkdir()
    (lab / "vault").symlink_to(outside, target_is_directory=True)
    assert purge_state(lab) == ["vault"]
    assert (outside / "keep").is_dir() and not (lab / "vault").exists()


def test_purge_of_a_missing_lab_does_nothing(tmp_path: Path) -> None:
    assert purge_state(tmp_path / "never-made") == []
