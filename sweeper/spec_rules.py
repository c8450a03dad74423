"""The character rules of the sweep schema's text values, and how an error states each.

sweeper.spec builds its fields from these patterns and sweeper.spec_errors words a failed
match with PATTERN_RULES. Both import this module; spec_errors never imports the schema
(`describe` is handed its root model), so the imports run one way: spec -> spec_errors.
"""

# vmargs reach config.properties; TorchServe's launcher reads that line with a plain
# split on the first '=' and passes the value through str.split() to java. So ':' and
# '=' inside the value are harmless and needed (-XX:+UseG1GC, -Dkey=value); a line
# break, '\\' (escape / line continuation) or '#'/'!' (comments) are not allowed.
# Environment values never enter config.properties (they go to the process
# environment), and thread-tuning values need ':' and '=' too
# (KMP_AFFINITY=granularity=fine,compact,1,0).
SAFE_TEXT = r"^[A-Za-z0-9_.,/+@%:= -]*$"
# "OMP_NUM_THREADS+MKL_NUM_THREADS" is one axis that sets both variables to each value.
ENV_NAME = r"^[A-Z_][A-Z0-9_]*(\+[A-Z_][A-Z0-9_]*)*$"
MODEL_NAME = r"^[a-z][a-z0-9_]*$"
SWEEP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# A path for config.properties: render escapes '\\' and non-ASCII; line breaks and
# control characters are never a path anyone meant.
STORE_PATH = r"^[^\x00-\x1f\x7f]+$"
# A served model's name as TorchServe takes it (an archive's manifest may say Resnet-152).
SERVED_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# A request set's name: a results column value and part of a trial's label.
REQUEST_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# A MIME type with optional parameters: one header line, no control characters.
CONTENT_TYPE = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9!#$&^_.+-]+(?: *;[ -~]*)?$"

# A target's address (sweeper.attach): http://HOST:PORT, a host name or an IPv4 address. No
# path (TorchServe's APIs sit at the root) and no https (the load engine speaks plain HTTP).
TARGET_URL = r"^http://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?/?$"

# The rule each pattern stands for, as error messages say it.
PATTERN_RULES = {
    SAFE_TEXT: "may contain only letters, digits, spaces and _ . , / + @ % - : = (no line break, #, !, \\ or quote)",
    ENV_NAME: "must be an UPPER_CASE variable name such as OMP_NUM_THREADS",
    MODEL_NAME: "must be a lowercase name such as mlp",
    SWEEP_NAME: "must start with a letter or digit and contain only letters, digits, _ . -",
    STORE_PATH: "must be a directory path without line breaks or control characters",
    CONTENT_TYPE: "must be a MIME type such as image/jpeg or text/plain (optionally ; parameters), on one line",
    TARGET_URL: "must be http://HOST:PORT such as http://127.0.0.1:8080 (a host name or IPv4 address; no path, no https)",
}
