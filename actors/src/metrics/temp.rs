//! Temperatures: hwmon sensors (`/sys/class/hwmon/hwmon*/temp*_input`) and thermal zones
//! (`/sys/class/thermal/thermal_zone*/temp`), Linux.
//!
//! Sensors are found once, at startup, and their files kept open. A sensor is named by its
//! chip and label (`coretemp Package id 0`, `nvme Composite`; `k10temp temp1` without a
//! label); a thermal zone by its type, unless an hwmon chip of that name already reports it
//! (the kernel exposes many zones through hwmon too). A value that cannot be read (a sleeping
//! device answers `ENODATA`) or lies outside [`TEMP_RANGE_C`] is left out of that sample; a
//! host without sensors sends nothing.

use crate::protocol::{MAX_SENSORS, TEMP_RANGE_C, Temperature};

use super::text::{fields, parse_i64};

/// Millidegrees Celsius as sysfs writes them (`45000\n`) to °C with one decimal; `None`
/// when it does not parse or is outside [`TEMP_RANGE_C`].
pub fn parse_millidegrees(text: &[u8]) -> Option<f32> {
    let milli = parse_i64(fields(text).next()?)?;
    #[allow(clippy::cast_precision_loss)] // sensor values are far below 2^24 millidegrees
    let c = (milli as f32 / 100.0).round() / 10.0;
    TEMP_RANGE_C.contains(&c).then_some(c)
}

#[cfg(target_os = "linux")]
pub use linux::TempReader;

#[cfg(target_os = "linux")]
mod linux {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::metrics::procfs::{ProcFile, read_small};
    use crate::metrics::text::clean_text;

    struct Sensor {
        name: String,
        file: ProcFile,
    }

    /// The temperature collector: every sensor found at startup, its file kept open.
    pub struct TempReader {
        sensors: Vec<Sensor>,
    }

    /// The entries of `dir` whose names start with `prefix`, sorted by the number after it
    /// (`hwmon2` before `hwmon10`).
    fn numbered(dir: &Path, prefix: &str) -> Vec<(u64, PathBuf)> {
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let n = name.to_str()?.strip_prefix(prefix)?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        found.sort();
        found
    }

    impl TempReader {
        /// Finds the sensors under `sys` (`/sys`; tests pass a directory of their own).
        pub fn discover(sys: &Path) -> Self {
            let mut sensors = Vec::new();
            let mut chips = Vec::new();
            for (_, chip) in numbered(&sys.join("class/hwmon"), "hwmon") {
                let chip_name = read_small(&chip.join("name")).unwrap_or_else(|| "hwmon".into());
                let mut inputs: Vec<(u64, String)> = std::fs::read_dir(&chip)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let file = e.file_name().into_string().ok()?;
                        let n = file
                            .strip_prefix("temp")?
                            .strip_suffix("_input")?
                            .parse()
                            .ok()?;
                        Some((n, file))
                    })
                    .collect();
                inputs.sort();
                for (n, file) in inputs {
                    let label = read_small(&chip.join(format!("temp{n}_label")))
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| format!("temp{n}"));
                    if let Ok(f) = ProcFile::open(chip.join(&file)) {
                        let name = clean_text(format!("{chip_name} {label}").as_bytes());
                        sensors.push(Sensor { name, file: f });
                    }
                }
                chips.push(chip_name);
            }
            for (_, zone) in numbered(&sys.join("class/thermal"), "thermal_zone") {
                let kind = read_small(&zone.join("type")).unwrap_or_else(|| "thermal".into());
                if chips.contains(&kind) {
                    continue;
                }
                if let Ok(f) = ProcFile::open(zone.join("temp")) {
                    sensors.push(Sensor {
                        name: clean_text(kind.as_bytes()),
                        file: f,
                    });
                }
            }
            sensors.truncate(MAX_SENSORS);
            Self { sensors }
        }

        /// Whether any sensor was found (else the group sends nothing).
        pub fn is_empty(&self) -> bool {
            self.sensors.is_empty()
        }

        /// One reading of every sensor that answers; `None` on a host without sensors.
        pub fn read(&self, buf: &mut Vec<u8>) -> Option<Vec<Temperature>> {
            if self.sensors.is_empty() {
                return None;
            }
            Some(
                self.sensors
                    .iter()
                    .filter_map(|s| {
                        let temp_c = parse_millidegrees(s.file.read(buf).ok()?)?;
                        Some(Temperature {
                            sensor: s.name.clone(),
                            temp_c,
                        })
                    })
                    .collect(),
            )
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn write(path: &Path, text: &str) {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).unwrap();
            }
            std::fs::write(path, text).unwrap();
        }

        /// A sysfs tree like a laptop's (coretemp with labels, an NVMe drive, an unlabelled
        /// chip, an ACPI zone that hwmon also reports, a zone hwmon does not, and a sensor
        /// that reads an impossible value) gives one named reading per real sensor, in order.
        #[test]
        fn sensors_are_found_named_and_read() {
            let root = std::env::temp_dir().join(format!("lanmon-temp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let hw = root.join("class/hwmon");
            write(&hw.join("hwmon0/name"), "acpitz\n");
            write(&hw.join("hwmon0/temp1_input"), "27800\n");
            write(&hw.join("hwmon2/name"), "coretemp\n");
            write(&hw.join("hwmon2/temp1_input"), "45000\n");
            write(&hw.join("hwmon2/temp1_label"), "Package id 0\n");
            write(&hw.join("hwmon2/temp2_input"), "43125\n");
            write(&hw.join("hwmon2/temp2_label"), "Core 0\n");
            write(&hw.join("hwmon2/temp2_max"), "100000\n");
            write(&hw.join("hwmon10/name"), "nvme\n");
            write(&hw.join("hwmon10/temp1_input"), "38850\n");
            write(&hw.join("hwmon10/temp1_label"), "Composite\n");
            write(&hw.join("hwmon11/name"), "k10temp\n");
            write(&hw.join("hwmon11/temp1_input"), "-273000\n");
            let th = root.join("class/thermal");
            write(&th.join("thermal_zone0/type"), "acpitz\n");
            write(&th.join("thermal_zone0/temp"), "27800\n");
            write(&th.join("thermal_zone1/type"), "x86_pkg_temp\n");
            write(&th.join("thermal_zone1/temp"), "46000\n");
            write(&th.join("cooling_device0/type"), "Processor\n");

            let reader = TempReader::discover(&root);
            let mut buf = Vec::new();
            let got = reader.read(&mut buf).unwrap();
            let pairs: Vec<(&str, f32)> =
                got.iter().map(|t| (t.sensor.as_str(), t.temp_c)).collect();
            assert_eq!(
                pairs,
                [
                    ("acpitz temp1", 27.8),
                    ("coretemp Package id 0", 45.0),
                    ("coretemp Core 0", 43.1),
                    ("nvme Composite", 38.9),
                    ("x86_pkg_temp", 46.0),
                ]
            );
            // Values are re-read from the open files.
            write(&hw.join("hwmon2/temp1_input"), "51000\n");
            let again = reader.read(&mut buf).unwrap();
            assert_eq!(again[1].temp_c, 51.0);
            let _ = std::fs::remove_dir_all(&root);

            // No sensors at all: the group sends nothing, not an empty list.
            let empty = TempReader::discover(&root);
            assert!(empty.is_empty());
            assert_eq!(empty.read(&mut buf), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millidegrees_parse_and_range() {
        assert_eq!(parse_millidegrees(b"45000\n"), Some(45.0));
        assert_eq!(parse_millidegrees(b"43125\n"), Some(43.1));
        assert_eq!(parse_millidegrees(b"-5250\n"), Some(-5.3));
        assert_eq!(parse_millidegrees(b"-273000\n"), None);
        assert_eq!(parse_millidegrees(b"999999999\n"), None);
        assert_eq!(parse_millidegrees(b"\n"), None);
        assert_eq!(parse_millidegrees(b"hot\n"), None);
    }
}
