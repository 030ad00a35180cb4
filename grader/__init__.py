"""Grading machinery for the lab, laid out by trust: ``grader.learner`` ships to learners whole
(visible checks, mistake catalogue, the rules shared with the grader; never imports
``solutions``); ``grader.sandbox`` runs submitted code, bounded, inside bubblewrap;
``grader.judge`` is trusted and decides verdicts from raw outputs; ``grader.course`` is the
instructor's nbgrader course (release, bundle, autograde, gradebook, feedback, report).
"""
