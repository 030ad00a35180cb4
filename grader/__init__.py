"""Grading machinery for the lab, laid out by trust.

- ``grader.learner``: ships to learners whole (the visible checks, the mistake catalogue,
  and the rules they share with the grader: tolerance, forbidden operators, what of a
  notebook is replayed, running one function on one case); never imports ``solutions``.
- ``grader.sandbox``: runs submitted code, inside bubblewrap, bounded in memory, CPU,
  processes and time.
- ``grader.judge``: trusted; decides verdicts from the raw outputs the sandbox sends back.
- ``grader.course``: the instructor's nbgrader course operations (release, bundle,
  autograde, gradebook, feedback, report).
"""
