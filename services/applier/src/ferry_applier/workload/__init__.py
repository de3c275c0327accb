"""The ModelServing workload: ServingGroups of pods by ordinal, scaling, rolling update, recovery.

``spec`` reads what the decisions need from a blueprint, ``state`` turns the pods the API server
has into groups and role instances, ``plan`` holds the pure decisions (spec/serving.md §6) and
``engine`` executes them against the API server.
"""
