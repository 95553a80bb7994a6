# A workshop hub on one machine: `jupyterhub -f classroom/jupyterhub_config.py`, run from
# the labkit checkout with the room's admin URLs in the environment (or under `labkit up`).
# See README "Run a workshop". tests/test_classroom_hub.py runs this very file (its ports,
# folders and the dummy login overridden on the command line).
import os
import sys

from labkit.classroom.hub import configure, proxy_command

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)

# Learners log in at http://<server>:8000. Behind TLS (nginx, caddy) keep it on loopback.
c.JupyterHub.bind_url = os.environ.get("LABKIT_HUB_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_ip = "127.0.0.1"

# Who may log in: a real authenticator for a workshop (GitHub OAuth through
# oauthenticator, or nativeauthenticator for sign-up with the trainer's approval).
# DummyAuthenticator lets anyone in with any password: loopback rehearsals and tests only.
c.JupyterHub.authenticator_class = os.environ.get("LABKIT_HUB_AUTHENTICATOR", "dummy")
# The trainers see the board and may open any learner's server (the labkit-trainer role);
# add them to c.Authenticator.admin_users too if they should start and stop servers.
trainers = os.environ.get("LABKIT_HUB_TRAINERS", "trainer").split(",")

# One Unix user for everyone here; with system users per learner, LocalProcessSpawner
# (the default) runs each server as its learner, who then cannot read the hub's files.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = os.environ.get(
    "LABKIT_HUB_HOMES", "/srv/labkit/homes/{username}")
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab/tree/lessons"
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
c.Spawner.start_timeout = 120  # a loaded machine starting 30 servers at 9:00
c.Spawner.mem_limit = "1G"  # advisory with local spawners; enforced by container spawners

# configurable-http-proxy from npm: on PATH, or `bash ci/classroom-proxy` installs it.
c.ConfigurableHTTPProxy.command = [proxy_command() or "configurable-http-proxy"]

# The spawn hook (a tenant and a copy of the lessons per learner), the board service and
# the trainer role: labkit.classroom.hub.
configure(c, trainers=trainers, board_port=int(os.environ.get("LABKIT_BOARD_PORT", "10101")))
