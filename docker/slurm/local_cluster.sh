#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for tests and for trying the array scripts.
#
#   bash docker/slurm/local_cluster.sh install   # apt-get install slurmctld slurmd slurm-client munge
#   bash docker/slurm/local_cluster.sh start     # munged (as munge) + slurmctld + slurmd
#   bash docker/slurm/local_cluster.sh status
#   bash docker/slurm/local_cluster.sh stop      # stops only the daemons this script started (pid files)
#
# Needs root. Writes /etc/slurm/slurm.conf (only if absent or written by this script: a real
# cluster's configuration is never touched), state and logs under $PRETTIER_SLURM_DIR
# (default /var/lib/prettier-slurm). Configuration: SlurmctldHost=localhost, auth/munge,
# proctrack/linuxproc, task/none, select/cons_tres, one node "localhost" with CPUs=NCPUS
# (default 2), partition "debug".
set -euo pipefail

DIR=${PRETTIER_SLURM_DIR:-/var/lib/prettier-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by prettier_bids docker/slurm/local_cluster.sh"
NCPUS=${NCPUS:-2}
log() { echo "local_cluster: $*" >&2; }

need_root() { [[ $(id -u) == 0 ]] || { log "needs root"; exit 77; }; }

have_slurm() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; }

install() {
    need_root
    have_slurm && { log "already installed"; return 0; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get -qq update
    apt-get -qq install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
    have_slurm
}

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
    if [[ -e "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
        log "$CONF exists and was not written by this script: not touching it"; exit 78
    fi
    local mem
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p /etc/slurm "$DIR/ctld" "$DIR/d"
    cat >"$CONF.tmp" <<EOF
$MARK
ClusterName=prettier-local
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MaxArraySize=100001
MaxJobCount=200000
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start() {
    need_root
    have_slurm || { log "slurm/munge not installed (run: $0 install)"; exit 69; }
    mkdir -p "$DIR"
    # munge: the daemon runs as the munge user
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
        chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    fi
    if ! alive /run/munge/munged.pid; then
        runuser -u munge -- /usr/sbin/munged --force
        log "munged started"
    fi
    write_conf
    if ! alive "$DIR/slurmctld.pid"; then
        slurmctld -i   # -i: ignore state a previous run left behind
        log "slurmctld started"
    fi
    if ! alive "$DIR/slurmd.pid"; then
        slurmd -N localhost
        log "slurmd started"
    fi
    # wait until the node takes jobs
    for _ in $(seq 60); do
        state=$(sinfo -h -n localhost -o '%T' 2>/dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*|completing*) log "node localhost is $state"; return 0 ;;
            down*|drain*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    log "the node did not come up; logs: $DIR/slurmctld.log $DIR/slurmd.log"
    tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    exit 1
}

stop() {
    need_root
    for f in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" /run/munge/munged.pid; do
        if alive "$f"; then
            pid=$(cat "$f"); kill "$pid"
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            log "stopped $(basename "$f" .pid) ($pid)"
        fi
    done
}

status() {
    for f in /run/munge/munged.pid "$DIR/slurmctld.pid" "$DIR/slurmd.pid"; do
        if alive "$f"; then echo "$(basename "$f" .pid): running ($(cat "$f"))"; else echo "$(basename "$f" .pid): stopped"; fi
    done
    sinfo 2>/dev/null || true
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 {install|start|stop|status}" >&2; exit 64 ;;
esac
