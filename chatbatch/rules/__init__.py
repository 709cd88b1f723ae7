"""The engine's pure rules: the request state machine, provider outcomes, poll planning,
rate-limit maths, what a completion holds, structured answers and prices. No I/O."""
