"""X-SAM's prompt markers and special tokens (``utils/constants.py``); import-light on purpose."""

IMAGE_TOKEN = "<image>"
REGION_TOKEN = "<region>"
SEG_TOKEN = "<SEG>"
PHRASE_START_TOKEN = "<p>"
PHRASE_END_TOKEN = "</p>"
#: Tokens X-SAM adds to Phi-3's vocabulary (``tokenizer.add_tokens(..., special_tokens=True)``).
SPECIAL_TOKENS = (SEG_TOKEN, PHRASE_START_TOKEN, PHRASE_END_TOKEN)
