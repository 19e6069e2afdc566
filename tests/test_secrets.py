"""Credentials never reach MLflow params, the run record, launch.log or the console -- and nothing else is
mistaken for one (paths above all)."""

from __future__ import annotations

import logging

import pytest
from conftest import compose

from thinker.tracking import secrets
from thinker.tracking.fingerprint import resolved_container
from thinker.tracking.mlflow_run import flatten
from thinker.tracking.secrets import (
    MASK,
    SECRET_ENV_VARS,
    SecretMaskingFilter,
    install_log_masking,
    is_secret_key,
    mask,
    mask_text,
    secret_env_values,
)

URI = "postgresql://user:pw@host/db"
MASKED_URI = "postgresql://user:***@host/db"
HF_VALUE = "hf_" + "AbCdEf0123456789" * 2  # the shape of a real token


@pytest.fixture(autouse=True)
def _no_registered_secrets(monkeypatch):
    monkeypatch.setattr(secrets, "_registered", set())


# ---------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    "text, expected",
    [
        (URI, MASKED_URI),
        (f"tracking at {URI} failed", f"tracking at {MASKED_URI} failed"),
        ("mysql+pymysql://admin:s3cr3t-Pass@db.internal:3306/mlflow", "mysql+pymysql://admin:***@db.internal:3306/mlflow"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("https://u:p%40ss@example.com/x", "https://u:***@example.com/x"),
        ("https://u:p@ss@example.com/x", "https://u:***@example.com/x"),  # an unescaped @ in the password
    ],
)
def test_uri_password_is_masked_keeping_scheme_user_and_host(text, expected):
    assert mask_text(text, env={}) == expected


@pytest.mark.parametrize(
    "text",
    ["sqlite:///mlflow.db", "http://127.0.0.1:5000", "https://user@example.com/x",
     "https://host:443/x?email=a@b.com", "file:///home/me/mlartifacts"],
)
def test_uris_without_a_password_are_left_alone(text):
    assert mask_text(text, env={}) == text


def test_password_of_a_uri_in_the_environment_is_masked_on_its_own_too():
    env = {"MLFLOW_TRACKING_URI": "postgresql://bob:LongPassw0rd@db/ml"}
    assert mask_text("auth failed with LongPassw0rd", env=env) == f"auth failed with {MASK}"


def test_registered_secret_is_masked():
    secrets.register_secret("mysql://u:C0nfigOnlyPw@h/db")  # a URI known only from the config
    assert mask_text("retrying with C0nfigOnlyPw", env={}) == f"retrying with {MASK}"


def test_uri_password_masked_in_nested_config_dicts():
    config = {"logger": {"tracking_uri": URI, "runs": [{"uri": URI}]}, "note": f"see {URI}"}
    assert mask(config, env={}) == {
        "logger": {"tracking_uri": MASKED_URI, "runs": [{"uri": MASKED_URI}]}, "note": f"see {MASKED_URI}"
    }


def test_uri_password_masked_in_mlflow_params():
    cfg = compose([f"logger.tracking_uri={URI}"])
    assert cfg.logger.tracking_uri == URI  # the override really carries the password
    params = flatten(resolved_container(cfg, drop=("output.dir",)))
    assert params["logger.tracking_uri"] == MASKED_URI
    assert not any(":pw@" in v for v in params.values())


# ---------------------------------------------------------------- environment values


def test_token_path_variable_does_not_mask_paths():
    env = {"HF_TOKEN_PATH": "/home/me/x", "HF_HOME": "/home/me/.cache/huggingface"}
    assert mask_text("reading /home/me/x/data.jsonl", env=env) == "reading /home/me/x/data.jsonl"
    assert "/home/me/x" not in secret_env_values(env)


def test_real_hf_token_value_is_masked():
    token = "Zq9" * 8  # no well-known prefix: only the variable name says it is a secret
    env = {"HF_TOKEN": token, "HF_TOKEN_PATH": "/home/me/x"}
    assert mask_text(f"GET /api/models with {token} from /home/me/x/a", env=env) == (
        f"GET /api/models with {MASK} from /home/me/x/a")


@pytest.mark.parametrize("name", sorted(SECRET_ENV_VARS))
def test_every_listed_variable_is_masked(name):
    assert mask_text("value=Kx7-Long-Credential-Value", env={name: "Kx7-Long-Credential-Value"}) == f"value={MASK}"


@pytest.mark.parametrize(
    "name", ["HF_TOKEN_PATH", "TOKENIZERS_PARALLELISM", "PWD", "OLDPWD", "GOOGLE_APPLICATION_CREDENTIALS",
             "PYTHON_KEYRING_BACKEND", "THINKER_MODELS_DIR", "HF_HOME"])
def test_variables_that_only_mention_a_credential_word_are_not_masked(name):
    assert mask_text("at /home/me/project/file", env={name: "/home/me/project"}) == "at /home/me/project/file"


def test_known_prefixes_are_masked_without_the_environment():
    assert mask_text(f"token {HF_VALUE} used", env={}) == f"token {MASK} used"
    assert mask_text("Authorization: Bearer abc.DEF-123_456", env={}) == f"Authorization: Bearer {MASK}"
    # identifiers that merely start like a key are not keys
    assert mask_text("pip install hf_transfer scikit-learn sk-learn", env={}) == (
        "pip install hf_transfer scikit-learn sk-learn")
    assert mask_text("uses Bearer authentication", env={}) == "uses Bearer authentication"


# ---------------------------------------------------------------- config keys


@pytest.mark.parametrize("key", ["api_key", "HF_TOKEN", "password", "client_secret", "AWS_SECRET_ACCESS_KEY",
                                 "MLFLOW_TRACKING_PASSWORD", "token", "logger.api-key", "provider.options.token",
                                 "apiKey", "APIKEY", "accessToken", "dsn", "sentry_dsn", "credentials",
                                 "gcp.credentials", "auth", "basic_auth", "passwd", "db.passphrase", "private_key",
                                 "connection_string", "refresh_token"])
def test_credential_keys_are_secret(key):
    assert is_secret_key(key)
    assert mask({key: "v"}, env={}) == {key: MASK}


@pytest.mark.parametrize("key", ["HF_TOKEN_PATH", "tokenizer_corpus", "trained_tokens", "max_new_tokens",
                                 "api_key_env", "pad_token", "eos_token", "key", "tracking_uri", "PWD",
                                 "max_tokens", "tokenizer", "trainer.max_seq_length", "hparams_search.objective",
                                 "provider.required_env", "sort_key", "primary_key", "num_key_value_heads",
                                 "secret_name", "tokens", "token_budget", "oauth_enabled", "passwords_file",
                                 "additional_special_token", "mask_token"])
def test_keys_that_only_mention_a_credential_word_are_not_secret(key):
    assert not is_secret_key(key)
    assert mask({key: "/home/me/x"}, env={}) == {key: "/home/me/x"}


@pytest.mark.parametrize("value", [None, "", True, False, "${oc.env:TOGETHER_API_KEY}", "null"])
def test_unset_boolean_and_interpolated_credential_values_stay_readable(value):
    assert mask({"token": value}, env={}) == {"token": value}


def test_a_numeric_credential_is_masked():
    assert mask({"token": 1234567890123}, env={}) == {"token": MASK}


# ---------------------------------------------------------------- credential keys written as text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("+provider.options.token=SECRETtok99", "+provider.options.token=***"),  # an override, as given
        ("- +provider.options.token=SECRETtok99", "- +provider.options.token=***"),  # overrides.yaml
        ("- '+provider.options.token=with spaces in it'", "- '+provider.options.token=***'"),
        ("++db.password=hunter2 seed=1", "++db.password=*** seed=1"),  # two overrides on a line
        ("    override_dirname: +provider.options.token=SECRETtok99,seed=1",  # hydra.yaml
         "    override_dirname: +provider.options.token=***,seed=1"),
        ("#1 : stage=validate +provider.options.token=SECRETtok99 seed=2",  # the launcher's echo
         "#1 : stage=validate +provider.options.token=*** seed=2"),
        ("    token: SECRETtok99", "    token: '***'"),  # config.yaml, --cfg output: still loads as YAML
        ("  - api_key: SECRETtok99", "  - api_key: '***'"),
        ('  dsn: "postgresql://u:pw@db/x"', '  dsn: "***"'),
        ('{"token": "SECRETtok99", "seed": 1}', '{"token": "***", "seed": 1}'),  # JSON
        ("{'apiKey': 'SECRETtok99'}", "{'apiKey': '***'}"),  # a Python repr
        ("run --api-key=SECRETtok99 now", "run --api-key=*** now"),
        ("GET /x?token=SECRETtok99&page=2", "GET /x?token=***&page=2"),
    ],
)
def test_credential_keys_written_as_text_are_masked(text, expected):
    assert mask_text(text, env={}) == expected


@pytest.mark.parametrize(
    "text",
    ["    max_new_tokens: 160", "  tokenizer_corpus: data/x.txt", "  api_key_env: TOGETHER_API_KEY",
     "  required_env:\n  - TOGETHER_API_KEY", "  required_env: [TOGETHER_API_KEY]", "    token: null",
     "    token: ${oc.env:MY_TOKEN}", "trainer.max_seq_length=256 hparams_search.objective=val_loss",
     "- key: relation", "sort_key=step", "max_tokens=64 tokenizer=gpt2", "missing token: set TINKER_API_KEY",
     "value=Kx7-Long-Credential-Value"],
)
def test_keys_that_only_mention_a_credential_word_stay_readable_in_text(text):
    assert mask_text(text, env={}) == text


def test_a_masked_yaml_config_still_loads_with_every_other_value(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"provider": {"options": {"token": "SECRETtok99", "api_key": 12345678}},
                            "evaluation": {"max_new_tokens": 160}, "optimizer": {"lr": "${model.lr}"},
                            "model": {"lr": 0.003}})
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    assert secrets.mask_file(path)
    loaded = OmegaConf.load(path)
    assert loaded.provider.options == {"token": MASK, "api_key": MASK}
    assert loaded.evaluation.max_new_tokens == 160 and loaded.optimizer.lr == 0.003
    assert not secrets.mask_file(path)  # nothing left to mask: the file is not rewritten


def test_config_secrets_are_masked_without_their_key_once_registered():
    secrets.register_config_secrets({"provider": {"options": {"token": "SECRETtok99", "note": "x"}}, "seed": 1})
    assert mask_text("the SDK said: bad credential SECRETtok99", env={}) == "the SDK said: bad credential ***"


# ---------------------------------------------------------------- logging


@pytest.fixture
def file_logger(tmp_path):
    """A logger writing through a real FileHandler (as Hydra's launch.log does), detached afterwards."""
    path = tmp_path / "launch.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("thinker.test_secrets")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, handler, path
    logger.removeHandler(handler)
    handler.close()


def test_logging_filter_masks_messages_args_and_tracebacks(file_logger, monkeypatch):
    logger, handler, path = file_logger
    monkeypatch.setenv("HF_TOKEN", "Zq9" * 8)
    handler.addFilter(SecretMaskingFilter())
    logger.info("MLflow run %s (%s)", "abc", URI)  # the secret in an argument
    logger.info(f"store {URI}")  # and in the message itself
    logger.warning("token %s", "Zq9" * 8)
    try:
        raise RuntimeError(f"could not connect to {URI}")
    except RuntimeError:
        logger.exception("failed")
    handler.flush()
    text = path.read_text()
    assert MASKED_URI in text and "Zq9Zq9" not in text
    assert ":pw@" not in text
    assert "RuntimeError: could not connect to postgresql://user:***@host/db" in text


def test_without_the_filter_the_file_would_hold_the_password(file_logger):
    logger, handler, path = file_logger  # the control: the handler alone does not mask
    logger.info("store %s", URI)
    handler.flush()
    assert ":pw@" in path.read_text()


def test_install_log_masking_attaches_to_root_handlers_once(tmp_path):
    root = logging.getLogger()
    path = tmp_path / "launch.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        assert install_log_masking() >= 1
        assert install_log_masking() == 0  # idempotent
        assert sum(isinstance(f, SecretMaskingFilter) for f in handler.filters) == 1
        logging.getLogger("thinker.child").info("tracking %s", URI)  # propagates to the root's handler
        handler.flush()
        assert MASKED_URI in path.read_text() and ":pw@" not in path.read_text()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
