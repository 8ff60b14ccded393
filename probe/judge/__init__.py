"""Judgement: pure functions of stage results, target facts and ``now`` to findings."""
