<#
.SYNOPSIS
    Publishes a complete staging directory as the script version directory (one rename) and then
    replaces the version marker atomically. Jobs see either the old version or the new one.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidateLength(3, 200)][string]$ScriptDir,
    [Parameter(Mandatory)][ValidatePattern('^[0-9a-f]{16}$')][string]$Version,
    [Parameter(Mandatory)][ValidateLength(3, 240)][string]$StagingDir
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
if (@(Get-ChildItem -LiteralPath $StagingDir -Recurse -Filter '*.part' -File).Count -gt 0) {
    $exception = New-Object System.InvalidOperationException -ArgumentList "The staging directory '$StagingDir' still holds a partial file."
    throw (New-Object System.Management.Automation.ErrorRecord -ArgumentList $exception, 'PartialFile', ([System.Management.Automation.ErrorCategory]::InvalidOperation), $StagingDir)
}
$target = Join-Path -Path $ScriptDir -ChildPath $Version
if (Test-Path -LiteralPath $target) {
    Remove-Item -LiteralPath $target -Recurse -Force
}
Move-Item -LiteralPath $StagingDir -Destination $target
$marker = Join-Path -Path $ScriptDir -ChildPath 'VERSION'
$temporary = "$marker.tmp"
Set-Content -LiteralPath $temporary -Value $Version -NoNewline -Encoding ASCII
Move-Item -LiteralPath $temporary -Destination $marker -Force
[ordered]@{ Version = $Version }
