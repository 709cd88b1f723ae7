"""``chatbatch serve``: the web dashboard. A front end like ``cli``: it imports ``chatbatch``
(and nothing of ``cli``, ``worker`` or the simulator); every figure comes from the same
functions the commands and the report use."""
