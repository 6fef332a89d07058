"""The money path on a three-node RabbitMQ cluster of quorum queues (scripts/stack.sh IPV_RABBIT_NODES=3),
with services given every node's URI: kill -9 the node that leads the busiest queues, then, once it
is back, the node leading them next; stop the whole cluster and start it again. After each: every
acknowledged step stored once, every event the vouchers service published in the ledger exactly once,
the budget conserved to the fen, nothing dead-lettered (tests/faults/test_money_faults.py `check`)."""
import time
from datetime import datetime, timezone

import pytest

from tests.faults.harness import MoneyWorkload, wait_until
from tests.faults.test_money_faults import (Money, PAID_AFTER_RECOVERY, PAID_CHAINS, acknowledged, chains_paid,
                                            check, entries)

pytestmark = pytest.mark.integration


# A cluster fault lasts a minute or more (a node's restart and rejoin included) while the clients keep
# walking chains: each needs enough enterprises to still be starting chains after the recovery (with 40
# each, the second test's clients ran out: 1,120 steps, all acknowledged, none begun after it).
PER_CLIENT = 120


@pytest.fixture(scope="module")
def cluster():
    money = Money(nodes=3, per_client=PER_CLIENT)
    yield money
    money.stop()


def run_with_fault(money, fault):
    """Like test_money_faults.run_with_fault, but `fault(work)` gets the workload, to wait on it mid-fault."""
    work = MoneyWorkload(money.vouchers, money.plan())
    work.wait_for("money moving before the fault (3 steps acknowledged)", lambda o: len(acknowledged(o)) >= 3)
    started = time.time()
    said = fault(work) or {}
    recovered = time.time()
    work.wait_for_success_after(recovered)
    work.wait_for(f"{PAID_CHAINS} chains paid, {PAID_AFTER_RECOVERY} of them begun after the recovery",
                  chains_paid(recovered))
    figures = check(money, work.results(), recovered)
    figures.update(said, fault_s=round(recovered - started, 1))
    print("figures:", figures)
    return figures


def kill_the_busiest_leader(money, work, killed_before=()):
    stack = money.stack
    leader = stack.busiest_leader()
    assert leader not in killed_before, f"{leader} leads again; the test wants another node this time"
    led_before = sorted(q for q, n in stack.leaders().items() if n == leader)
    killed = time.time()
    stack.kill9_node(leader)
    # With the node still dead: the queues it led elect leaders among the other two, and the money moves on,
    # its events reaching the audit ledger through them.
    work.wait_for("money moving on two nodes (3 more steps acknowledged)",
                  lambda o: len([r for r in acknowledged(o) if r["issued"] > killed]) >= 3)
    # A write is acknowledged with the broker down too (its events wait in the outbox): what shows the
    # broker serving is an event that occurred after the kill reaching the audit ledger.
    auditor = {"Authorization": "Bearer " + money.audit.signer.token("auditor", "faults")}
    since = datetime.fromtimestamp(killed, timezone.utc)
    wait_until("an event that occurred after the kill in the audit ledger, the node still dead", lambda: any(
        datetime.fromisoformat(e["event"]["occurred_at"].replace("Z", "+00:00")) > since
        for e in entries(money.audit.base, auditor)), 180, interval=1)
    flowing = time.time()
    moved = stack.leaders()
    stuck = [q for q in led_before if moved.get(q) in (None, leader)]
    assert not stuck, f"no new leader on the surviving nodes for {stuck}"
    stack.start_rabbit()
    return {"killed": leader, "queues_it_led": len(led_before),
            "events_flowing_again_s": round(flowing - killed, 1),   # an upper bound: the ledger is polled
            "down_s": round(time.time() - killed, 1)}   # killed until started again and rejoined


_killed = []


def test_kill_minus_9_of_the_node_leading_the_busiest_queues_loses_nothing(cluster):
    figures = run_with_fault(cluster, lambda work: kill_the_busiest_leader(cluster, work))
    _killed.append(figures["killed"])


def test_kill_minus_9_of_a_second_node_once_the_first_is_back_loses_nothing(cluster):
    run_with_fault(cluster, lambda work: kill_the_busiest_leader(cluster, work, killed_before=_killed))


def test_stopping_the_whole_cluster_and_starting_it_again_loses_nothing(cluster):
    def fault(work):
        cluster.stack.stop_cluster()
        cluster.stack.start_rabbit()
    run_with_fault(cluster, fault)
