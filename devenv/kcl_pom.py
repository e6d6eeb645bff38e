"""Make amazon-kclpy's ``pom.xml`` a buildable Maven project and check its jars.

The sdist ships a ``pom.xml`` that only lists dependencies: it has no
groupId/artifactId/version of its own, so Maven refuses to read it. This
script gives it coordinates so that ``mvn dependency:copy-dependencies`` can
fetch the MultiLangDaemon jars, and afterwards checks that every jar the pom
names arrived.

Usage::

    python devenv/kcl_pom.py patch  <pom.xml>
    python devenv/kcl_pom.py check  <pom.xml> <jars-dir>
    python devenv/kcl_pom.py verify <pom.xml>

``verify`` runs in the target interpreter: it imports ``amazon_kclpy.kcl``
and checks the installed package's ``jars`` directory. Each command exits 0
on success and 1 with a message on stderr otherwise.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

POM_NS = "http://maven.apache.org/POM/4.0.0"
COORDINATES = {
    "groupId": "io.spanstream.devenv",
    "artifactId": "amazon-kclpy-jars",
    "version": "0",
}


def _tag(name: str) -> str:
    return f"{{{POM_NS}}}{name}"


def _parse_project(pom_path: Path) -> ET.Element:
    ET.register_namespace("", POM_NS)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    # Keep the pom's comments when it is rewritten.
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    return ET.parse(pom_path, parser=parser).getroot()


def patch_pom(pom_path: Path) -> bool:
    """Add Maven coordinates to the project in ``pom_path`` if it lacks them.

    Returns True if the file was rewritten, False if it already had them.
    Raises ``ET.ParseError`` or ``OSError`` if the file cannot be read.
    """
    project = _parse_project(pom_path)
    missing = [key for key in COORDINATES if project.find(_tag(key)) is None]
    if not missing:
        return False
    # Coordinates must follow modelVersion to keep the conventional order.
    model_version = project.find(_tag("modelVersion"))
    position = 0 if model_version is None else list(project).index(model_version) + 1
    for offset, key in enumerate(missing):
        element = ET.Element(_tag(key))
        element.text = COORDINATES[key]
        element.tail = "\n    "
        project.insert(position + offset, element)
    ET.ElementTree(project).write(pom_path, encoding="utf-8", xml_declaration=True)
    return True


def expected_jars(pom_path: Path) -> list[str]:
    """Return the jar file names (``artifactId-version.jar``) the pom depends on.

    ``${...}`` versions are resolved from the pom's ``<properties>``. Raises
    ValueError naming the dependency if a version cannot be resolved.
    """
    project = _parse_project(pom_path)
    properties: dict[str, str] = {}
    props = project.find(_tag("properties"))
    if props is not None:
        for child in props:
            if not isinstance(child.tag, str):
                continue  # a comment
            local_name = child.tag.removeprefix(f"{{{POM_NS}}}")
            properties[f"${{{local_name}}}"] = (child.text or "").strip()
    names = []
    for dependency in project.iterfind(f"{_tag('dependencies')}/{_tag('dependency')}"):
        artifact_id = dependency.findtext(_tag("artifactId"), "").strip()
        version = dependency.findtext(_tag("version"), "").strip()
        version = properties.get(version, version)
        if not artifact_id or not version or version.startswith("${"):
            raise ValueError(
                f"cannot resolve dependency {artifact_id!r} version {version!r} "
                f"in {pom_path}"
            )
        names.append(f"{artifact_id}-{version}.jar")
    return names


def missing_jars(pom_path: Path, jars_dir: Path) -> list[str]:
    """Return the jar names the pom names that are not files in ``jars_dir``."""
    return [name for name in expected_jars(pom_path) if not (jars_dir / name).is_file()]


def verify_installed(pom_path: Path) -> Path:
    """Check the running interpreter's amazon_kclpy has every jar; return its dir.

    Raises ImportError if ``amazon_kclpy.kcl`` does not import and
    FileNotFoundError listing the jars missing from its ``jars`` directory.
    """
    from amazon_kclpy import kcl  # noqa: PLC0415  (only in the target venv)

    jars_dir = Path(kcl.__file__).resolve().parent / "jars"
    missing = missing_jars(pom_path, jars_dir)
    if missing:
        raise FileNotFoundError(f"{jars_dir} lacks {', '.join(missing)}")
    return jars_dir


def main(argv: list[str]) -> int:
    """Run the ``patch`` or ``check`` command; return the process exit status."""
    if len(argv) >= 2 and argv[0] == "patch":
        changed = patch_pom(Path(argv[1]))
        print(f"{argv[1]}: {'added coordinates' if changed else 'already patched'}")
        return 0
    if len(argv) >= 3 and argv[0] == "check":
        pom_path, jars_dir = Path(argv[1]), Path(argv[2])
        missing = missing_jars(pom_path, jars_dir)
        if missing:
            print(
                f"{len(missing)} jar(s) named by {pom_path} are missing from "
                f"{jars_dir}: {', '.join(missing)}",
                file=sys.stderr,
            )
            return 1
        print(f"{jars_dir}: all {len(expected_jars(pom_path))} jars present")
        return 0
    if len(argv) >= 2 and argv[0] == "verify":
        pom_path = Path(argv[1])
        try:
            jars_dir = verify_installed(pom_path)
        except (ImportError, FileNotFoundError) as exc:
            print(f"amazon_kclpy is not usable: {exc}", file=sys.stderr)
            return 1
        multilang = [n for n in expected_jars(pom_path) if "multilang" in n]
        print(f"amazon_kclpy OK: {jars_dir} holds {', '.join(multilang)} and the rest")
        return 0
    print(__doc__, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
