"""Instructor-only reference answers and hidden test cases. Never shipped to learners."""
