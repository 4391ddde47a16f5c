"""Verify a model package file as a device would: decrypt (if encrypted), signature, hashes, self-test."""

import base64
import binascii
import hashlib
import json
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from model_store import reference
from model_store.crypto import CIPHERTEXT_MAGIC, CryptoError, Keyring, decrypt_package, import_public_keys
from model_store.package import PackageError, read_package


class Command(BaseCommand):
    help = (
        "Verify FILE, a package tar or an encrypted package (.spkg.enc): print its manifest and OK, or the reason "
        "and exit 1. An encrypted package needs --content-key, or --from-registry to use the key stored here."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--keyring", type=Path, help="signing keyring directory (default MODEL_SIGNING_KEYRING_DIR)"
        )
        parser.add_argument(
            "--public-keys", type=Path, help="JSON of trusted public keys (GET /api/v1/signing-keys/ 'keys')"
        )
        parser.add_argument("--content-key", help="the package's content key, hex or base64")
        parser.add_argument("--from-registry", action="store_true", help="look the content key up by the file's sha256")

    def handle(self, *args, file: Path, keyring, public_keys, content_key, from_registry, **options):
        try:
            data = file.read_bytes()
        except OSError as error:
            raise CommandError(f"{file}: {error.strerror}") from None
        try:
            trusted = self._trusted_keys(keyring, public_keys)
            if data[:4] == CIPHERTEXT_MAGIC:
                data = decrypt_package(data, self._content_key(data, content_key, from_registry))
            package = read_package(data, trusted)
            model = package.integer_model()
            selftest = package.selftest()
            self._check_selftest(model, selftest)
        except (CryptoError, PackageError) as error:
            raise CommandError(f"{file}: {error}") from None
        self.stdout.write(json.dumps(package.manifest.to_dict(), indent=2, sort_keys=True))
        frames = selftest[model.inputs[0]].shape[0]
        self.stdout.write(
            self.style.SUCCESS(
                f"OK: signature by {package.manifest.signer_key_id}, hashes, self-test on {frames} frame(s)"
            )
        )

    @staticmethod
    def _trusted_keys(keyring: Path | None, public_keys: Path | None) -> dict:
        if public_keys is not None:
            try:
                return import_public_keys(json.loads(public_keys.read_text()))
            except (OSError, ValueError) as error:
                raise CommandError(f"{public_keys}: not a JSON object of public keys ({error})") from None
        directory = keyring or settings.MODEL_SIGNING_KEYRING_DIR
        if not Path(directory).is_dir():
            raise CommandError(f"no signing keyring at {directory}: give --keyring or --public-keys")
        return Keyring(directory).public_keys()

    @staticmethod
    def _content_key(ciphertext: bytes, given: str | None, from_registry: bool) -> bytes:
        if given:
            try:
                return bytes.fromhex(given)
            except ValueError:
                try:
                    return base64.b64decode(given, validate=True)
                except binascii.Error:
                    raise CommandError("--content-key is neither hex nor base64") from None
        if from_registry:
            from fleet_server.registry.models import Package
            from fleet_server.registry.services import package_content_key

            package = Package.objects.filter(blob_sha256=hashlib.sha256(ciphertext).hexdigest()).first()
            if package is None:
                raise CommandError("this ciphertext is not a package of this registry (no package has its sha256)")
            return package_content_key(package)
        raise CommandError("the file is encrypted: give --content-key, or --from-registry")

    @staticmethod
    def _check_selftest(model, selftest: dict) -> None:
        missing = [name for name in (*model.inputs, *model.outputs) if name not in selftest]
        if missing:
            raise PackageError(f"selftest.npz: no array for {', '.join(missing)}")
        outputs = reference.run(model, selftest[model.inputs[0]])
        for name in model.outputs:
            if not np.array_equal(outputs[name], selftest[name]):
                raise PackageError(f"self-test: the reference executor's {name} differs from the package's")
