"""JupyterHub for one class on one machine, for a trial: ``make hub`` (``python -m grader hub``)
starts it with the variables below set.

Trial choices, and what a real class swaps them for (README, "A JupyterHub for the class"):
everyone signs in with one shared password (DummyAuthenticator: use OAuth/LDAP, e.g.
GitHubOAuthenticator or LTI from the learning platform), and every server runs as this
machine's user in its own home folder (SimpleLocalProcessSpawner: use one container per user,
DockerSpawner or KubeSpawner, so learners cannot read each other's files or the instructor's).
"""

import os
import sys

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

hub_dir = os.environ["TFS_HUB_DIR"]
port = int(os.environ["TFS_HUB_PORT"])
instructor = os.environ["TFS_HUB_INSTRUCTOR"]
learners = [name for name in os.environ["TFS_HUB_LEARNERS"].split(",") if name]

c.JupyterHub.bind_url = f"http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{port + 1}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{port + 2}"
c.ConfigurableHTTPProxy.command = [os.environ["TFS_HUB_PROXY"]]
c.JupyterHub.db_url = f"sqlite:///{hub_dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{hub_dir}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = f"{hub_dir}/jupyterhub.pid"

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["TFS_HUB_PASSWORD"]
c.Authenticator.allowed_users = {instructor, *learners}
c.Authenticator.admin_users = {instructor}

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = f"{hub_dir}/home/{{username}}"
# The hub's own environment: what the release notebook imports (torch, former, grader.learner,
# nbgrader's extensions). No PYTHONPATH is passed on, so solutions/ stays out of the kernels.
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "TZ"]
c.Spawner.environment = {
    # every user's nbgrader reads nbgrader_config.py beside this file
    "JUPYTER_CONFIG_PATH": os.path.dirname(os.path.abspath(__file__)),
    "TFS_EXCHANGE": f"{hub_dir}/exchange",
    "TFS_COURSE_CONFIG": os.environ["TFS_COURSE_CONFIG"],
    "TFS_HUB_INSTRUCTOR": instructor,
    "OMP_NUM_THREADS": "1",
}
c.Spawner.default_url = "/lab"
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
