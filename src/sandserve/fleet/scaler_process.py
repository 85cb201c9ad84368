"""The autoscaler process: ``python -m sandserve.fleet.scaler_process FLEET_ID ROW_ID LEDGER`` (started by
``fleet up --min/--max`` or ``fleet scale``; detached, its log and ledger row of its own).

At every look it reads each worker's load from its engine (never from the gateway), asks the rule
(``autoscale.ScaleRule``) for one decision, and acts on it: boots run in threads (a GPU boot takes minutes and
the loads keep being read meanwhile), removals drain first, and a worker that died is replaced. At zero
workers the holder (``hold.Holder``) is the gateway's only worker, and a request held there wakes the scaler
at once. It stops when its fleet is taken down or its gateway dies.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from sandserve.endpoint import Endpoint
from sandserve.errors import ProviderError, SandserveError
from sandserve.fleet import gateway as gw
from sandserve.fleet.autoscale import Decision, FleetLoad, ScaleRule
from sandserve.fleet.drain import drain_and_remove
from sandserve.fleet.hold import Holder, Target
from sandserve.fleet.loads import LoadReader
from sandserve.fleet.members import change_members, shared_worker_key, worker_spec
from sandserve.fleet.model import Fleet, Member
from sandserve.fleet.scaler_row import read_settings, scaler_handle, write_state
from sandserve.fleet.scaler_supervisor import HOLDER_KEY_ENV, supervise
from sandserve.providers.gateway import SCALER_PROVIDER
from sandserve.serve import lifecycle
from sandserve.serve.boots import expected_boot_seconds
from sandserve.serve.ledger import Registry, State
from sandserve.spec import ServeSpec

log = logging.getLogger("sandserve.fleet.scaler")
HOLDER_ID = "holder"
DECISIONS_KEPT = 20
#: How long a stopping scaler takes down the workers it was booting (its process group is killed after 5 s).
STOP_SECONDS = 4.0


class Scaler:
    def __init__(
        self,
        fleet_id: str,
        row_id: str,
        registry: Registry,
        *,
        holder_sock: socket.socket | None = None,
        holder_key: str | None = None,
    ) -> None:
        self.fleet_id = fleet_id
        self.row_id = row_id
        self.registry = registry
        self.rule = ScaleRule(read_settings(row_id, registry))
        fleet_row = registry.get(fleet_id)
        self.spec = ServeSpec.from_record(fleet_row.spec)
        self.holder = Holder(
            fleet_row.model,
            capacity=self.rule.settings.hold_capacity,
            timeout=self.rule.settings.hold_timeout,
            shared_key=shared_worker_key(Fleet.from_record(fleet_row)),
            sock=holder_sock,
            api_key=holder_key,
        )
        self.parent_pid = os.getppid()
        self.holder_member: Member | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="scaler")
        self.boots: list[concurrent.futures.Future[Endpoint]] = []
        self.drains: dict[str, concurrent.futures.Future[bool]] = {}
        self.decisions: deque[dict[str, Any]] = deque(maxlen=DECISIONS_KEPT)
        self.now_reason = "starting"
        self.loads = LoadReader()

    # --- the loop -------------------------------------------------------------------------------------------

    def run(self) -> int:
        self.holder.start()
        log.info("autoscaler of %s started (holder on %s)", self.fleet_id, self.holder.url)
        self._recover()
        while True:
            fleet_row = lifecycle.refresh(self.registry.get(self.fleet_id))
            if fleet_row.state is State.DOWN:
                log.info("fleet %s was taken down: stopping", self.fleet_id)
                return 0
            if os.getppid() != self.parent_pid:
                log.error("the autoscaler's supervisor is gone: stopping")
                self._note("stop", "its supervisor was killed: nothing would restart it")
                self._write()
                return 4
            if fleet_row.live is False:
                log.error("the gateway of %s is not running any more: stopping", self.fleet_id)
                self._note("stop", "the gateway is not running any more")
                self._write()
                return 3
            self.rule.settings = read_settings(self.row_id, self.registry)
            if self.holder.refusing and not self.rule.backing_off(time.monotonic()):
                self.holder.accept()
            try:
                self._step(Fleet.from_record(fleet_row))
            except SandserveError as exc:  # the gateway's admin API failed once: look again next time
                log.warning("%s", exc.message)
                self._note("failed", exc.message)
            self._write()
            self.holder.wait_for_request(self.rule.settings.interval)

    def _step(self, fleet: Fleet) -> None:
        self._collect(fleet)
        fleet = Fleet.from_record(self.registry.get(self.fleet_id))
        decision = self.rule.decide(time.monotonic(), self._look(fleet))
        self._act(fleet, decision)

    def _look(self, fleet: Fleet) -> FleetLoad:
        serving: list[Endpoint] = []
        dead: list[str] = []
        for member in fleet.members:
            if member.endpoint_id in self.drains:
                continue
            record = lifecycle.refresh(self.registry.get(member.endpoint_id))
            if not record.live or record.endpoint is None:
                dead.append(member.endpoint_id)
            else:
                serving.append(record.endpoint)
        return FleetLoad(
            loads=self.loads.read(serving) if serving else {},
            dead=dead,
            # a finished boot counts until it has been registered (else it would be booted twice)
            booting=len(self.boots),
            draining=sum(not drain.done() for drain in self.drains.values()),
            held=self.holder.held,
            boot_seconds=expected_boot_seconds(self.registry, self.spec),
        )

    def _act(self, fleet: Fleet, decision: Decision) -> None:
        if decision.action == "none":
            self.now_reason = decision.reason
            return
        self._note(decision.action, decision.reason, decision.worker)
        log.info(
            "%s: %s%s", decision.action, decision.reason, f" ({decision.worker})" if decision.worker else ""
        )
        if decision.action == "up":
            self.boots.append(self.pool.submit(self._boot))
        elif decision.action == "replace" and decision.worker:
            self._forget_dead(fleet, decision.worker)
            self.boots.append(self.pool.submit(self._boot))
        elif decision.action == "down" and decision.worker:
            member = next(m for m in fleet.members if m.endpoint_id == decision.worker)
            serving = [m for m in fleet.members if m.endpoint_id not in self.drains]
            if serving == [member]:  # the last one: the holder takes requests from now on
                self._hold_requests(fleet)
            timeout = self.rule.settings.drain_timeout
            self.drains[member.endpoint_id] = self.pool.submit(
                drain_and_remove, fleet, member, self.registry, timeout=timeout
            )

    # --- after a restart ------------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Take over from an autoscaler that died: its holder registration (same socket, same key, so the same
        worker to the gateway), and the workers it left outside the fleet: one that finished booting joins,
        anything else is taken down."""
        previous = scaler_handle(self.registry.get(self.row_id)).state
        fleet = Fleet.from_record(self.registry.get(self.fleet_id))
        holder_id = previous.get("holder_worker_id")
        if holder_id:
            self.holder_member = Member(endpoint_id=HOLDER_ID, worker_id=str(holder_id), url=self.holder.url)
        members = {member.endpoint_id for member in fleet.members}
        for record in self.registry.members_of(self.fleet_id):
            if record.id in members or record.provider == SCALER_PROVIDER:
                continue
            record = lifecycle.refresh(record, self.registry)  # a boot whose owner died is settled here
            if record.state is State.READY and record.live and record.endpoint is not None:
                self._note("adopted", f"{record.id} was booted before a restart: it joins", record.id)
                self._join(fleet, record.endpoint)
                fleet = Fleet.from_record(self.registry.get(self.fleet_id))
            elif record.state is not State.DOWN:
                self._note("removed", f"{record.id} was left booting by the autoscaler that died", record.id)
                lifecycle.down(record, self.registry)
        if previous.get("restarting"):
            self._note("restarted", f"the autoscaler {previous['restarting']['reason']}: started again")
        if self.holder_member is not None and fleet.members:
            with gw.admin_client(fleet.url, fleet.endpoint.api_key) as admin:
                gw.deregister(admin, fleet.gateway, self.holder_member)
            self.holder_member = None

    # --- boots, drains, the holder --------------------------------------------------------------------------

    def _boot(self) -> Endpoint:
        fleet = Fleet.from_record(self.registry.get(self.fleet_id))
        spec = worker_spec(self.spec, self.fleet_id, shared_worker_key(fleet))
        return lifecycle.up(spec, registry=self.registry)

    def _collect(self, fleet: Fleet) -> None:
        """Finished boots are registered (and released held requests); finished drains are forgotten."""
        for boot in [boot for boot in self.boots if boot.done()]:
            self.boots.remove(boot)
            try:
                endpoint = boot.result()
            except ProviderError as exc:  # quota, capacity: no new worker for a while
                self._back_off(f"the provider refused a worker: {exc.message}")
                continue
            except SandserveError as exc:  # a boot that failed would fail again at once: not in a loop
                self._back_off(f"a worker did not boot: {exc.message}")
                continue
            self._join(fleet, endpoint)
        for endpoint_id, drain in list(self.drains.items()):
            if drain.done():
                del self.drains[endpoint_id]
                try:
                    drained = drain.result()
                    self._note(
                        "removed",
                        f"{endpoint_id} drained and taken down"
                        if drained
                        else f"{endpoint_id} taken down (it did not drain in time or was gone)",
                        endpoint_id,
                    )
                except SandserveError as exc:
                    self._note("failed", f"removing {endpoint_id}: {exc.message}", endpoint_id)

    def _back_off(self, reason: str) -> None:
        """No new worker for ``settings.backoff`` seconds; at zero, requests are told why at once."""
        self.rule.back_off(time.monotonic(), reason)
        if self.holder_member is not None:
            self.holder.refuse(reason)
        self._note("backoff", reason)
        log.warning("backing off: %s", reason)

    def _join(self, fleet: Fleet, endpoint: Endpoint) -> None:
        try:
            with gw.admin_client(fleet.url, fleet.endpoint.api_key) as admin:
                member = gw.register_endpoint(admin, fleet.gateway, endpoint)
        except SandserveError as exc:
            lifecycle.down(self.registry.get(endpoint.id), self.registry)
            self._back_off(f"the gateway did not take worker {endpoint.id}: {exc.message}")
            return
        change_members(self.registry, self.fleet_id, add=member)
        self._note("joined", f"{endpoint.id} serves", endpoint.id)
        if self.holder_member is not None:
            self.holder.release(Target(endpoint.url, endpoint.api_key))
            with gw.admin_client(fleet.url, fleet.endpoint.api_key) as admin:
                gw.deregister(admin, fleet.gateway, self.holder_member)
            self.holder_member = None

    def _hold_requests(self, fleet: Fleet) -> None:
        """Before the last worker leaves: the holder becomes the gateway's worker, so no request is
        refused."""
        if self.holder_member is not None:
            return
        self.holder.hold_again()
        with gw.admin_client(fleet.url, fleet.endpoint.api_key) as admin:
            self.holder_member = gw.register(
                admin, fleet.gateway, self.holder.url, fleet.endpoint.model, self.holder.api_key, HOLDER_ID
            )

    def _forget_dead(self, fleet: Fleet, endpoint_id: str) -> None:
        member = next(m for m in fleet.members if m.endpoint_id == endpoint_id)
        if [m for m in fleet.members if m.endpoint_id not in self.drains] == [member]:
            self._hold_requests(fleet)  # the only worker died: requests wait for its replacement
        try:
            with gw.admin_client(fleet.url, fleet.endpoint.api_key) as admin:
                gw.deregister(admin, fleet.gateway, member)
        except SandserveError as exc:
            log.warning("deregistering dead %s: %s", endpoint_id, exc.message)
        change_members(self.registry, self.fleet_id, remove=member)
        lifecycle.down(self.registry.get(endpoint_id), self.registry)

    def stop(self) -> None:
        """Boots under way see their server vanish and end at once, instead of leaving a worker nobody
        registers (a stopped fleet's sweep may have passed its row before the server started)."""
        deadline = time.monotonic() + STOP_SECONDS
        while any(not boot.done() for boot in self.boots) and time.monotonic() < deadline:
            for record in self.registry.members_of(self.fleet_id):
                if record.state is State.BOOTING and record.provider != SCALER_PROVIDER:
                    try:
                        lifecycle.down(record, self.registry)
                    except SandserveError:
                        pass
            time.sleep(0.25)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.loads.close()

    # --- what fleet status shows ----------------------------------------------------------------------------

    def _note(self, action: str, reason: str, worker: str | None = None) -> None:
        self.decisions.append({"at": time.time(), "action": action, "reason": reason, "worker": worker})

    def _write(self) -> None:
        now = time.monotonic()
        backing_off = self.rule.backing_off(now)
        write_state(
            self.row_id,
            self.registry,
            {
                "pid": os.getpid(),
                "updated": time.time(),
                "now": self.now_reason,
                "decisions": list(self.decisions),
                "backoff": (
                    {
                        "reason": self.rule.backoff_reason,
                        "seconds_left": round((self.rule.backoff_until or now) - now),
                    }
                    if backing_off
                    else None
                ),
                "booting": sum(not boot.done() for boot in self.boots),
                "draining": len(self.drains),
                "held": self.holder.held,
                "holder_worker_id": self.holder_member.worker_id if self.holder_member else None,
                "cold_starts": list(self.holder.cold_starts),
                "held_timed_out": self.holder.timed_out,
                "refusing": self.holder.refusing,
            },
        )


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per load probe otherwise
    # sglang-router opens some connections to a worker with an HTTP/2 preface, which the holder (HTTP/1.1)
    # refuses; the gateway then speaks HTTP/1.1. Each refusal would log a traceback.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _stop)
    if argv[:1] != ["--child"]:
        return supervise(*argv)
    holder_fd, fleet_id, row_id, ledger = argv[1:]
    scaler = Scaler(
        fleet_id,
        row_id,
        Registry(Path(ledger)),
        holder_sock=socket.socket(fileno=int(holder_fd)),
        holder_key=os.environ.pop(HOLDER_KEY_ENV, None),
    )
    try:
        return scaler.run()
    except KeyboardInterrupt:
        log.info("stopped")
        return 0
    finally:
        scaler.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
