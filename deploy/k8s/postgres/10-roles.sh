#!/bin/sh
# Run by the postgres image once, when it initialises an empty data volume (as POSTGRES_USER,
# on POSTGRES_DB): creates the assistant's roles (roles.psql; the image ignores that name itself).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner_password="$DB_OWNER_PASSWORD" -v actions_password="$DB_ACTIONS_PASSWORD" \
    -v rasa_password="$DB_RASA_PASSWORD" -v retention_password="$DB_RETENTION_PASSWORD" \
    -v backup_password="$DB_BACKUP_PASSWORD" \
    -f /docker-entrypoint-initdb.d/roles.psql
