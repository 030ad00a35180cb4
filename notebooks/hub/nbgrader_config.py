"""nbgrader for every user of the trial hub (on Jupyter's config path of their servers): the
course's settings (course id, cell timeout, late policy), the shared exchange, and who is who.
Each server runs as the same system user here, so the learner's id is their hub name."""

import os

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

load_subconfig(os.environ["TFS_COURSE_CONFIG"])  # noqa: F821 - provided by traitlets
c.Exchange.root = os.environ["TFS_EXCHANGE"]
user = os.environ.get("JUPYTERHUB_USER")
if user and user == os.environ.get("TFS_HUB_INSTRUCTOR"):
    c.CourseDirectory.root = os.path.join(os.environ["HOME"], "course")
elif user:
    c.CourseDirectory.student_id = user
