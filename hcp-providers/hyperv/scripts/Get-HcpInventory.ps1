<#
.SYNOPSIS
    Reports this Hyper-V host: capacity, every VM (with HCP's mark in Notes), template images and
    virtual switches.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidateLength(3, 240)][string]$TemplateDir,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vmHost = Get-VMHost
$clusterName = $null
if ($Cluster) { $clusterName = (Get-Cluster).Name }
$vms = @(Get-VM | Sort-Object -Property Name | ForEach-Object { Get-HcpVmView -VM $_ })
$images = @()
if (Test-Path -LiteralPath $TemplateDir) {
    $images = @(Get-ChildItem -LiteralPath $TemplateDir -Filter '*.vhdx' -File |
            Sort-Object -Property Name | ForEach-Object { $_.BaseName })
}
[ordered]@{
    Host     = [ordered]@{
        Name                  = $vmHost.Name
        LogicalProcessorCount = $vmHost.LogicalProcessorCount
        MemoryCapacityMiB     = [int64]($vmHost.MemoryCapacity / 1048576)
        Cluster               = $clusterName
    }
    Vms      = $vms
    Images   = $images
    Switches = @(Get-VMSwitch | ForEach-Object { $_.Name })
}
