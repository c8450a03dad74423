"""Values that several layers need and that must agree: the schema's defaults that the
readers of a finished run fall back on when its sweep.yaml does not say.

This module imports nothing of the package, so every layer may import it.
"""

# The share of answers with request.expect_status below which a trial failed, and the
# success floor of every ranking (recommendation, search, compare, verify). Not 1.0: one
# lost request in a few thousand (a connection reset under load) should not disqualify a
# configuration; a server that refuses one request in a hundred should.
MIN_SUCCESS_RATE = 0.99

# The blocks of one duel, lead-in included, at most: the servers' keys, refreshed once
# before the warm-ups, expire after 60 minutes (sweeper.torchserve.process). The schema
# (settings.duel), the command (--blocks) and the report's advice hold to it.
MAX_DUEL_BLOCKS_S = 45 * 60.0
