#!/bin/sh
# The image's entrypoint: the database password from a file (a compose secret), then `mailwarden "$@"`.
#
# libpq takes the password from PGPASSWORD; compose mounts it as a file instead, named by PGPASSWORD_FILE (the
# convention of the official images: postgres reads POSTGRES_PASSWORD_FILE from the same secret). The value is read
# as postgres reads it (trailing newlines dropped) and never printed. Exit 3 with one line when the file is missing,
# unreadable or empty, as `mailwarden` exits 3 on an unusable configuration.
set -eu

if [ -n "${PGPASSWORD_FILE:-}" ]; then
    if [ -n "${PGPASSWORD:-}" ]; then
        echo "mailwarden: both PGPASSWORD and PGPASSWORD_FILE are set: set only PGPASSWORD_FILE (the secret's path)" >&2
        exit 3
    fi
    if [ ! -f "$PGPASSWORD_FILE" ] || [ ! -r "$PGPASSWORD_FILE" ]; then
        echo "mailwarden: the database password file $PGPASSWORD_FILE (PGPASSWORD_FILE) is missing, not a regular" \
             "file, or not readable by uid $(id -u): create secrets/db_password beside docker-compose.yml" >&2
        exit 3
    fi
    PGPASSWORD=$(cat "$PGPASSWORD_FILE")
    if [ -z "$PGPASSWORD" ]; then
        echo "mailwarden: the database password file $PGPASSWORD_FILE (PGPASSWORD_FILE) is empty" >&2
        exit 3
    fi
    export PGPASSWORD
    unset PGPASSWORD_FILE
fi

exec mailwarden "$@"
