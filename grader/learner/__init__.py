"""What ships to learners: the visible checks and the rules they share with the grader."""
