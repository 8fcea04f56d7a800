#!/usr/bin/env bash
# The PostgreSQL JDBC driver for `reconcile --engine spark` over a PostgreSQL store, from Maven
# Central (mvn dependency:copy, cached). Prints the jar's path on stdout.
#   scripts/jdbc.sh
# Env: PGJDBC_VERSION (default below), ORDERTRAIL_CACHE (jar cache, default <repo>/.cache);
# ordertrail finds the jar in $ORDERTRAIL_CACHE/jdbc/ (or set ORDERTRAIL_JDBC_JAR to any jar).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
VERSION=${PGJDBC_VERSION:-42.7.7}
CACHE=${ORDERTRAIL_CACHE:-$repo/.cache}
JAR="$CACHE/jdbc/postgresql-$VERSION.jar"
if [[ ! -f "$JAR" ]]; then
  mkdir -p "$CACHE/jdbc"
  echo "jdbc.sh: resolving org.postgresql:postgresql:$VERSION from Maven Central into $CACHE/jdbc" >&2
  # run outside any Maven project: the goal needs none
  (cd "$CACHE/jdbc" && mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact="org.postgresql:postgresql:$VERSION" -DoutputDirectory="$CACHE/jdbc" >&2)
fi
echo "$JAR"
