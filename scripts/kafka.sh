#!/usr/bin/env bash
# A single-node Apache Kafka 4.x (KRaft, broker + controller) on 127.0.0.1 for tests.
#   scripts/kafka.sh start     resolve jars (mvn, cached), format storage once, start, wait;
#                              prints the bootstrap address on stdout
#   scripts/kafka.sh stop      stop cleanly (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh restart   stop and start again, keeping the data
#   scripts/kafka.sh status
# Env: KAFKA_PORT (default 59092), KAFKA_HOME_DIR (state, default /tmp/ordertrail-kafka-$KAFKA_PORT),
#      ORDERTRAIL_CACHE (jar cache, default <repo>/.cache).
set -euo pipefail
cmd=${1:-start}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORT=${KAFKA_PORT:-59092}
CPORT=$((PORT + 1))
STATE=${KAFKA_HOME_DIR:-/tmp/ordertrail-kafka-$PORT}
CACHE=${ORDERTRAIL_CACHE:-$repo/.cache}
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
LIBS="$CACHE/kafka-$VERSION/libs"

resolve() {
  if [[ -f "$LIBS/.complete" ]]; then return; fi
  mkdir -p "$LIBS"
  echo "kafka.sh: resolving org.apache.kafka:kafka_2.13:$VERSION from Maven Central into $LIBS" >&2
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIBS" -DincludeScope=runtime >&2
  touch "$LIBS/.complete"
}

running() {
  [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null
}

wait_port() {
  for _ in $(seq 1 240); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      if grep -q "Kafka Server started\|KafkaRaftServer.*started\|Transitioning from RECOVERY to RUNNING" "$STATE/logs-app/server.log" 2>/dev/null; then
        return 0
      fi
    fi
    if ! running; then
      echo "kafka.sh: broker exited; last lines of its log:" >&2
      tail -30 "$STATE/server.out" "$STATE/logs-app/server.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
  echo "kafka.sh: broker not ready after 120 s" >&2
  return 1
}

start() {
  resolve
  if running; then echo "127.0.0.1:$PORT"; return; fi
  mkdir -p "$STATE/logs-app"
  cat > "$STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$STATE/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.flush.interval.messages=1000000
PROPS
  local java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
    -Dkafka.logs.dir="$STATE/logs-app" -Dlog4j2.configurationFile="$here/kafka/log4j2.properties")
  if [[ ! -f "$STATE/data/meta.properties" ]]; then
    local cid
    cid=$(java -cp "$LIBS/*" "${java_opts[@]}" kafka.tools.StorageTool random-uuid)
    java -cp "$LIBS/*" "${java_opts[@]}" kafka.tools.StorageTool format --standalone \
      -t "$cid" -c "$STATE/server.properties" >"$STATE/format.out" 2>&1 \
      || { cat "$STATE/format.out" >&2; exit 1; }
  fi
  : > "$STATE/logs-app/server.log"
  nohup java -cp "$LIBS/*" "${java_opts[@]}" kafka.Kafka "$STATE/server.properties" \
    >"$STATE/server.out" 2>&1 &
  echo $! > "$STATE/pid"
  wait_port
  echo "127.0.0.1:$PORT"
}

stop() {
  if ! running; then rm -f "$STATE/pid"; return; fi
  local pid
  pid=$(cat "$STATE/pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$STATE/pid"; return; }
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE/pid"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running; then echo "running 127.0.0.1:$PORT"; else echo "stopped"; exit 1; fi ;;
  resolve) resolve ;;
  *) echo "usage: $0 start|stop|restart|status|resolve" >&2; exit 2 ;;
esac
