"""The GitHub API client: PyGithub with the base URL, token and retries this project uses.

* Base URL: ``GITHUB_API_URL`` (GitHub Enterprise Server, or a test server), else api.github.com.
* Token: ``GPU_RUNNER_GITHUB_TOKEN``, else ``GITHUB_TOKEN``. Or a GitHub App:
  ``GPU_RUNNER_GITHUB_APP_ID`` with ``GPU_RUNNER_GITHUB_APP_PRIVATE_KEY`` (PEM text) and
  ``GPU_RUNNER_GITHUB_APP_INSTALLATION_ID``; PyGithub refreshes the installation token.
* Retries: PyGithub's ``GithubRetry`` (5xx, 429 and secondary rate limits, Retry-After honoured).
* Repository: ``GITHUB_REPOSITORY`` (owner/name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

DEFAULT_API_URL = "https://api.github.com"


def api_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")


def token(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("GPU_RUNNER_GITHUB_TOKEN") or env.get("GITHUB_TOKEN") or None


def repository(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    repo = (env.get("GITHUB_REPOSITORY") or "").strip()
    if not repo or repo.count("/") != 1:
        raise ConfigError("GITHUB_REPOSITORY must name the repository whose runners these are, as OWNER/NAME "
                          f"(got {repo!r}); GitHub Actions sets it")
    return repo


def _auth(env: Mapping[str, str]) -> Any:
    from github import Auth

    app_id = env.get("GPU_RUNNER_GITHUB_APP_ID")
    if app_id:
        key = env.get("GPU_RUNNER_GITHUB_APP_PRIVATE_KEY")
        inst = env.get("GPU_RUNNER_GITHUB_APP_INSTALLATION_ID")
        if not key or not inst:
            raise ConfigError("GPU_RUNNER_GITHUB_APP_ID needs GPU_RUNNER_GITHUB_APP_PRIVATE_KEY and "
                              "GPU_RUNNER_GITHUB_APP_INSTALLATION_ID")
        return Auth.AppAuth(int(app_id), key).get_installation_auth(int(inst))
    tok = token(env)
    if not tok:
        raise ConfigError("no GitHub token: set GPU_RUNNER_GITHUB_TOKEN (a token that may administer the "
                          "repository's self-hosted runners) or GITHUB_TOKEN")
    return Auth.Token(tok)


def client(env: Mapping[str, str] | None = None) -> Any:
    """A ``github.Github`` for this environment."""
    from ..errors import require_extra

    require_extra("github", "the GitHub API")
    from github import Github, GithubRetry

    env = os.environ if env is None else env
    try:
        backoff = float(env.get("GPU_RUNNER_RETRY_BASE_S", "2"))
    except ValueError:
        backoff = 2.0
    retry = GithubRetry(total=int(env.get("GPU_RUNNER_RETRY_ATTEMPTS", "6") or 6), backoff_factor=backoff,
                        status_forcelist=[429, 500, 502, 503, 504], secondary_rate_wait=60 * backoff / 2)
    return Github(base_url=api_url(env), auth=_auth(env), retry=retry, per_page=100, timeout=30, lazy=True)
