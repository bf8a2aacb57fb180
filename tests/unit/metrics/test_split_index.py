"""A window's split index: the parts of what changed equal a whole split's, and it holds its
groups' keys in a form the garbage collector does not walk."""

from __future__ import annotations

import gc

from metrics.rollup import split
from metrics.split_index import SplitIndex


def team_of(rep: str | None) -> str:
    return "unassigned"


def test_an_update_gives_a_whole_splits_parts_for_the_reps_it_names() -> None:
    values = {("calls_made", "ann", "east"): 1.0, ("calls_made", "bob", "east"): 2.0,
              ("tool_uses", "ann", "east", "crm"): 1.0}
    index = SplitIndex()
    assert index.full(values, {}, {}, team_of) == split(values, {}, team_of)
    values[("emails_sent", "ann", "east")] = 3.0  # a key added to the window: its group grows
    values[("calls_made", "ann", "east")] = 4.0
    got = index.update(values, {}, None, team_of, [{("ann", "east")}])
    assert got is not None
    reps, teams, org = split(values, {}, team_of)
    assert got[0] == {("ann", "east"): reps[("ann", "east")]}
    assert list(got[0][("ann", "east")].sums) == [("calls_made",), ("tool_uses", "crm"),
                                                   ("emails_sent",)]  # the window's order
    assert got[1]["east"].sums == teams["east"].sums
    assert got[2].sums == org.sums


def test_a_groups_keys_are_held_untracked_by_the_garbage_collector() -> None:
    """A worker's split indexes held ~120,000 lists of key tuples for 1,000 reps, ~40 % of its
    tracked objects, walked by every full collection (~250 ms); tuples of untracked tuples are
    untracked once a collection has seen them (before: lists, always tracked)."""
    values = {("calls_made", f"rep-{i}", "east"): 1.0 for i in range(3)}
    index = SplitIndex()
    index.full(values, {}, {}, team_of)
    values[("emails_sent", "rep-0", "east")] = 1.0
    assert index.update(values, {}, None, team_of, [{("rep-0", "east")}]) is not None
    gc.collect()
    held = [*index.group_keys.values(), *index.group_rests.values()]
    assert len(held) == 6 and len(index.group_keys[("rep-0", "east")]) == 2
    assert not any(map(gc.is_tracked, held))
