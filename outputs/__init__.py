"""The outputs of a camera's feed, each attached through its one contract
(:class:`feed.Output`): the variants and their adaptation (:mod:`outputs.variants`,
:mod:`outputs.adapt`, :mod:`outputs.sizes`) and the bus publisher
(:mod:`outputs.publisher`).  The recorder, an output too, has a room of its own
(:mod:`recording`)."""
