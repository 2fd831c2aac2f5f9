#!/bin/sh
# Patroni's bootstrap.users creates roles, not databases: chatd's database
# is created here, once, by the first primary.
exec psql -X -q -v ON_ERROR_STOP=1 "$1" -c 'create database chatd'
