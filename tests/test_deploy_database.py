"""deploy/'s database access: no workload connects as the PostgreSQL superuser or the schema's
owner but the migration, each service as its own role (backend/privileges.py) with that role's
password; the nightly backup dumps as the read-only role with the server's own pg_dump, uploads
encrypted off-site and keeps 30 daily and 12 monthly. Spoiled roles: tests/test_security_deploy.py."""

from __future__ import annotations

import pytest

import deploy_support as deploy

ROLE_CHECKS = ["roles-psql-creates-every-role", "a-role-per-service", "k8s-privileged-passwords",
               "k8s-own-roles", "k8s-containers-exist", "compose-privileged-passwords", "compose-own-roles",
               "compose-start-after-the-migration"]


@pytest.fixture(scope="module")
def objects():
    return deploy.k8s_objects()


@pytest.fixture(scope="module")
def role_problems(objects):
    return deploy.database_role_problems(objects, deploy.compose())


def test_every_role_check_is_tested(role_problems):
    assert list(role_problems) == ROLE_CHECKS


@pytest.mark.parametrize("check", ROLE_CHECKS)
def test_database_roles(role_problems, check):
    assert role_problems[check] == []


# --- the nightly backup (k8s/backup-cronjob.yaml, k8s/backup/backup.sh) -------------------------------

BACKUP_CHECKS = ["applied-nightly-never-twice", "dumps-as-the-read-only-role", "pg-dump-of-the-servers-version",
                 "uploaded-encrypted", "dump-upload-keep-30-daily-12-monthly", "events-left-out",
                 "network-policy-lets-it-reach-postgres"]


@pytest.fixture(scope="module")
def backup_problems(objects):
    return deploy.backup_problems(objects)


def test_every_backup_check_is_tested(backup_problems):
    assert list(backup_problems) == BACKUP_CHECKS


@pytest.mark.parametrize("check", BACKUP_CHECKS)
def test_backup(backup_problems, check):
    """Nightly, never twice at once; pg_dump as the read-only role with the server's own image;
    uploaded by rclone crypt with a password from the Secret; 30 daily and 12 monthly kept; the
    conversation events (kept RETENTION_DAYS only) left out; let in by the NetworkPolicy."""
    assert backup_problems[check] == []
