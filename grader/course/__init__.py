"""The instructor's nbgrader course: release, student bundle, autograde, gradebook, reports."""
