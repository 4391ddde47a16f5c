"""A size-limited upload handler: model files spool to a temporary file and reading stops past the limit.

Django's own handlers keep reading whatever the client sends. This one refuses a request whose
Content-Length is already too large before reading its body, and stops a body that grows past the
limit (a lying or missing Content-Length), so a 2 GB upload costs neither the disk nor the time to
read it. The view asks ``refused`` and answers 413 with it.
"""

from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict

# The multipart framing and the small form fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


class SizeLimitedUploadHandler(TemporaryFileUploadHandler):
    def __init__(self, request=None, *, max_bytes: int):
        super().__init__(request)
        self.max_bytes = max_bytes
        self.received = 0
        self.refused = ""

    def _refuse(self) -> None:
        self.refused = (
            f"the upload is larger than the limit of {self.max_bytes:,} bytes (MODEL_UPLOAD_MAX_BYTES); "
            "nothing was stored"
        )

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > self.max_bytes + FORM_OVERHEAD_BYTES:
            self._refuse()
            return QueryDict(encoding=encoding), MultiValueDict()
        return super().handle_raw_input(input_data, META, content_length, boundary, encoding)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self._refuse()
            raise StopUpload(connection_reset=True)
        return super().receive_data_chunk(raw_data, start)
