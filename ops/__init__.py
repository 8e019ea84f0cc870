"""The operator CLI, `flywheel` (`python -m ops.cli`): status, topics, replays, dead letters and
members' journeys of a running deployment. `ops.cli` is the command line; one module per
command; `ops.target` is where things are and how they are reached."""
