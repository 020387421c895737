"""Late commitment: hold a ROUTINE pickup back while the order has time to spare.

Orders reach the dispatcher one by one (about ten an hour by day in the demo hospital), and most
ward and OR supplies are ordered 45 to 150 minutes before they are needed. A dispatcher that
sends a robot the moment an order arrives carries almost every order alone. Holding the pickup
of an order with slack until shortly before it must leave lets orders that arrive meanwhile
share the trip (the same warehouse, the same wards), which is where the distance saving of a
joint plan comes from.

The rule is deliberately simple and pure: a ROUTINE order with a `needed_by` may not be picked
up before

    needed_by - margin_s - (pickup service + direct travel + drop-off service)

so that even travelling alone it would arrive `margin_s` before it is needed. STAT and URGENT
orders, orders without a `needed_by`, and orders whose time has come are never held. The planner
sees the result as a hard earliest time on the pickup (`Task.pickup_earliest`); the dispatcher
holds the robot where it is until it must leave for that pickup, so it stays free for STAT work.
"""

from __future__ import annotations

from fleet.domain.priority import Priority


def deferred_pickup(
    *,
    priority: Priority,
    needed_by: float | None,
    now: float,
    direct_s: float,
    margin_s: float | None,
) -> float | None:
    """The earliest pickup time for an order, or None when it should not be held.

    `direct_s` is the pickup service, the direct travel from pickup to drop-off and the drop-off
    service; `margin_s` None (or not positive) switches late commitment off.
    """
    if margin_s is None or margin_s <= 0 or priority is not Priority.ROUTINE:
        return None
    if needed_by is None:
        return None
    earliest = needed_by - margin_s - direct_s
    return earliest if earliest > now else None


__all__ = ["deferred_pickup"]
