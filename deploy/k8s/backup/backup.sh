#!/bin/sh
# The nightly off-site backup (backup-cronjob.yaml): two steps, two containers of one pod
# sharing the directory BACKUP_WORK_DIR (an emptyDir):
#
#   backup.sh dump     (postgres:18)  pg_dump as vaksin_backup, custom format, with its sha256
#   backup.sh upload   (rclone)       the dump, encrypted (rclone crypt), to the object store,
#                                     read back and checked; then 30 daily and 12 monthly kept
#
# The object store holds daily/<UTC time>.dump (one a night) and monthly/<UTC time>.dump (the
# first of each month). Restore: docs/operations.md.
set -eu
DIR=${BACKUP_WORK_DIR:-/backup}
KEEP_DAILY=${BACKUP_KEEP_DAILY:-30}
KEEP_MONTHLY=${BACKUP_KEEP_MONTHLY:-12}
REMOTE=${BACKUP_REMOTE:-sealed:}

log() { echo "backup: $*"; }

case "${1:-}" in
dump)
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    umask 077
    # Rasa's conversation events are left out (the table, not its rows): they are kept
    # RETENTION_DAYS only, and a monthly backup kept a year would keep them far longer.
    pg_dump --format=custom --no-password --exclude-table-data=events \
        --dbname="$DATABASE_URL" --file="$DIR/$stamp.dump.partial"
    mv "$DIR/$stamp.dump.partial" "$DIR/$stamp.dump"
    (cd "$DIR" && sha256sum "$stamp.dump" > "$stamp.dump.sha256")
    log "dumped $stamp.dump ($(wc -c < "$DIR/$stamp.dump") bytes)"
    ;;
upload)
    set -- "$DIR"/*.dump
    [ "$#" -eq 1 ] && [ -f "$1" ] || { log "expected one dump in $DIR, found: $*"; exit 1; }
    name=$(basename "$1")
    month=$(echo "$name" | cut -c1-6)
    rclone copyto "$1" "${REMOTE}daily/$name"
    rclone copyto "$1.sha256" "${REMOTE}daily/$name.sha256"
    # Read back through the decryption: the store holds a copy that restores, or the Job fails.
    expected=$(cut -d' ' -f1 < "$1.sha256")
    stored=$(rclone cat "${REMOTE}daily/$name" | sha256sum | cut -d' ' -f1)
    [ "$stored" = "$expected" ] || { log "the uploaded $name reads back different"; exit 1; }
    if [ -z "$(rclone lsf --files-only --include "$month*.dump" "${REMOTE}monthly/" 2>/dev/null)" ]; then
        rclone copyto "${REMOTE}daily/$name" "${REMOTE}monthly/$name"
        rclone copyto "${REMOTE}daily/$name.sha256" "${REMOTE}monthly/$name.sha256"
        log "kept $name as the backup of month $month"
    fi
    # Count, not age: nights without a backup never empty the store.
    for kind in daily monthly; do
        keep=$KEEP_DAILY
        [ "$kind" = monthly ] && keep=$KEEP_MONTHLY
        rclone lsf --files-only --include "*.dump" "${REMOTE}$kind/" | sort -r | tail -n "+$((keep + 1))" |
            while read -r old; do
                rclone deletefile "${REMOTE}$kind/$old"
                rclone deletefile "${REMOTE}$kind/$old.sha256" || true
                log "removed $kind/$old"
            done
    done
    log "uploaded $name"
    ;;
*)
    echo "usage: backup.sh dump|upload" >&2
    exit 2
    ;;
esac
