"""The jars of the local Apache Kafka broker: fetched once with Maven, then used offline.

``infra/kafka/pom.xml`` pins the Kafka release; :func:`ensure_jars` copies the broker's runtime
jars into ``<jars_root>/<version>/`` the first time (Maven's own cache, ``~/.m2``, is reused)
and only checks that folder afterwards. A lock file serialises concurrent first fetches.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from infra.exceptions import BinaryNotFoundError, InfraError

logger = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
JAVA_HINT = "apt-get install openjdk-17-jre-headless  (Debian/Ubuntu; Java 17 or newer)"
MAVEN_HINT = "apt-get install maven  (Debian/Ubuntu; `brew install maven` on macOS)"
ARTIFACT = "org.apache.kafka:kafka_2.13"
# Written last into a version folder: its presence means the copy is complete.
COMPLETE_MARKER = ".complete"
MAVEN_TIMEOUT_S = 600.0


class JarFetchError(InfraError):
    """Maven could not fetch the broker's jars; the message names the artifact."""


def pinned_version(pom_text: str) -> str:
    """The Kafka release a pom pins in its ``<kafka.version>`` property."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom_text)
    if match is None:
        raise InfraError(f"{POM} does not pin a Kafka release (no <kafka.version> property)")
    return match.group(1)


def kafka_version() -> str:
    return pinned_version(POM.read_text())


def find_java() -> Path:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return Path(java_home) / "bin" / "java"
    found = shutil.which("java")
    if found is None:
        raise BinaryNotFoundError(
            f"the local Apache Kafka broker needs Java (not on PATH, no $JAVA_HOME); "
            f"install it with: {JAVA_HINT}"
        )
    return Path(found)


def find_maven() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise BinaryNotFoundError(
            f"fetching the Apache Kafka broker's jars needs Maven (mvn not on PATH); "
            f"install it with: {MAVEN_HINT}"
        )
    return Path(found)


def jars_present(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file() and any(folder.glob("kafka_2.13-*.jar"))


def ensure_jars(jars_root: Path) -> Path:
    """The folder holding the pinned broker's jars, fetching them with Maven if absent."""
    version = kafka_version()
    folder = Path(jars_root).resolve() / version
    if jars_present(folder):
        return folder
    maven = find_maven()  # only needed for the first fetch
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if jars_present(folder):  # another process fetched them meanwhile
                return folder
            _fetch(maven, version, folder)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


def _fetch(maven: Path, version: str, folder: Path) -> None:
    logger.info("fetching %s:%s and its dependencies with Maven into %s", ARTIFACT, version, folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".fetch-") as tmp:
        # Maven runs in a scratch folder so it never writes a target/ into the repository.
        shutil.copy(POM, Path(tmp) / "pom.xml")
        staged = Path(tmp) / "jars"
        argv = [
            str(maven),
            "--batch-mode",
            "--quiet",
            "-f",
            str(Path(tmp) / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staged}",
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise JarFetchError(
                f"Maven did not fetch {ARTIFACT}:{version} within {MAVEN_TIMEOUT_S:.0f}s "
                f"(is Maven Central reachable?)"
            ) from exc
        if done.returncode != 0 or not any(staged.glob("kafka_2.13-*.jar")):
            output = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise JarFetchError(
                f"Maven could not fetch {ARTIFACT}:{version} (is Maven Central reachable? "
                f"`mvn dependency:get -Dartifact={ARTIFACT}:{version}` shows why); "
                f"mvn exited {done.returncode}:\n{output}"
            )
        (staged / COMPLETE_MARKER).write_text(f"{ARTIFACT}:{version}\n")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)  # an incomplete copy left by an interrupted fetch
        os.replace(staged, folder)
    logger.info("fetched %d jars into %s", len(list(folder.glob("*.jar"))), folder)
