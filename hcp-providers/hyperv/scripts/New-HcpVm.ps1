<#
.SYNOPSIS
    Creates a VM from a template VHDX (differencing disk or full copy), sizes it, gives it one
    network adapter per entry of Networks (switch and VLAN), records HCP's mark in its Notes and KVP items, attaches a cloud-init NoCloud
    seed ISO (volume label "cidata") built from the user-data, and starts it.
.NOTES
    Idempotent: a VM whose Notes already carry this VmId is returned as it is.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$')][string]$Name,
    [Parameter(Mandatory)][ValidateLength(1, 128)][string]$Image,
    [Parameter(Mandatory)][ValidateLength(3, 260)][string]$TemplatePath,
    [Parameter(Mandatory)][ValidateLength(3, 240)][string]$VhdDir,
    [Parameter(Mandatory)][ValidateSet('differencing', 'copy')][string]$DiskMode,
    [Parameter(Mandatory)][ValidateRange(1, 65536)][int]$DiskGiB,
    [Parameter(Mandatory)][ValidateRange(1, 2)][int]$Generation,
    [Parameter(Mandatory)][ValidateRange(1, 240)][int]$Vcpus,
    [Parameter(Mandatory)][ValidateRange(32, 12582912)][int64]$MemoryMiB,
    [bool]$DynamicMemory,
    [ValidateRange(0, 12582912)][int64]$MemoryMinimumMiB,
    [ValidateRange(0, 12582912)][int64]$MemoryMaximumMiB,
    [hashtable[]]$Networks,
    [Parameter(Mandatory)][ValidateLength(2, 16384)][string]$Notes,
    [hashtable]$Kvp,
    [string]$UserData,
    [string]$Unattend,
    [string[]]$IsoPaths,
    [bool]$Start,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$existing = Find-HcpVm -VmId $VmId -Cluster $Cluster
if ($existing) {
    return [ordered]@{ Id = $existing.Id.ToString(); State = $existing.State.ToString(); Existing = $true; OwnerNode = $existing.ComputerName }
}
if (Get-VM -Name $Name -ErrorAction SilentlyContinue) {
    throw (New-HcpError -Category ResourceExists -ErrorId 'VmNameInUse' -Message "A virtual machine named '$Name' already exists on host '$env:COMPUTERNAME'.")
}
if (-not (Test-Path -LiteralPath $TemplatePath)) {
    throw (New-HcpError -Category ObjectNotFound -ErrorId 'TemplateNotFound' -Message "Template VHDX '$TemplatePath' for image '$Image' was not found on host '$env:COMPUTERNAME'.")
}
if ($Networks.Count -gt 8) {
    throw (New-HcpError -Category InvalidArgument -ErrorId 'TooManyAdapters' -Message "A VM has at most 8 network adapters; $($Networks.Count) were requested.")
}
foreach ($network in $Networks) {
    $vlan = [int]$network.VlanId
    if ($vlan -lt 0 -or $vlan -gt 4094) {
        throw (New-HcpError -Category InvalidArgument -ErrorId 'InvalidVlan' -Message "VLAN $vlan is outside 0-4094.")
    }
    $null = Get-VMSwitch -Name ([string]$network.SwitchName)
}
$vmHost = Get-VMHost
if ($Vcpus -gt $vmHost.LogicalProcessorCount) {
    throw (New-HcpError -Category InvalidArgument -ErrorId 'TooManyProcessors' -Message "The processor count $Vcpus exceeds the $($vmHost.LogicalProcessorCount) logical processors of host '$env:COMPUTERNAME'.")
}
if ($Start) {
    $usedBytes = (Get-VM | Where-Object { $_.State -eq 'Running' } | Measure-Object -Property MemoryStartup -Sum).Sum
    if ($null -eq $usedBytes) { $usedBytes = 0 }
    $freeMiB = [int64](($vmHost.MemoryCapacity - $usedBytes) / 1048576)
    if ($MemoryMiB -gt $freeMiB) {
        throw (New-HcpError -Category LimitsExceeded -ErrorId 'InsufficientMemory' -Message "Not enough memory on host '$env:COMPUTERNAME': $MemoryMiB MiB requested, $freeMiB MiB free.")
    }
}

$diskPath = Join-Path -Path $VhdDir -ChildPath "$Name-$VmId.vhdx"
Write-HcpProgress -Percent 10 -Message "creating disk $Name-$VmId.vhdx ($DiskMode)"
if ($DiskMode -eq 'differencing') {
    $null = New-VHD -Path $diskPath -ParentPath $TemplatePath -Differencing
}
else {
    # A full copy of a large VHDX takes minutes: copy in blocks and report progress.
    $source = [System.IO.File]::OpenRead($TemplatePath)
    $partPath = "$diskPath.part"
    $target = [System.IO.File]::Create($partPath)
    try {
        $buffer = New-Object byte[] (8388608)
        $copied = 0
        $lastReport = 0
        while (($read = $source.Read($buffer, 0, $buffer.Length)) -gt 0) {
            $target.Write($buffer, 0, $read)
            $copied += $read
            $percent = [int](100 * $copied / $source.Length)
            if ($percent -ge $lastReport + 20) {
                $lastReport = $percent
                Write-HcpProgress -Percent ([int](10 + $percent * 0.6)) -Message "copying template VHDX: $percent%"
            }
        }
    }
    finally {
        $target.Dispose()
        $source.Dispose()
    }
    Move-Item -LiteralPath $partPath -Destination $diskPath
}
$currentSize = (Get-VHD -Path $diskPath).Size
if ($DiskGiB * 1073741824 -gt $currentSize) {
    Resize-VHD -Path $diskPath -SizeBytes ($DiskGiB * 1073741824)
}

$vm = New-VM -Name $Name -Generation $Generation -MemoryStartupBytes ($MemoryMiB * 1048576) -VHDPath $diskPath
Set-VMProcessor -VM $vm -Count $Vcpus
if ($DynamicMemory) {
    Set-VMMemory -VM $vm -DynamicMemoryEnabled $true -MinimumBytes ($MemoryMinimumMiB * 1048576) -StartupBytes ($MemoryMiB * 1048576) -MaximumBytes ($MemoryMaximumMiB * 1048576)
}
else {
    Set-VMMemory -VM $vm -DynamicMemoryEnabled $false -StartupBytes ($MemoryMiB * 1048576)
}
# New-VM made one adapter: the first network uses it, every further network gets its own.
$index = 0
foreach ($network in $Networks) {
    if ($index -eq 0) {
        $adapter = Get-VMNetworkAdapter -VM $vm | Select-Object -First 1
        Connect-VMNetworkAdapter -VMNetworkAdapter $adapter -SwitchName ([string]$network.SwitchName)
    }
    else {
        $adapter = Add-VMNetworkAdapter -VM $vm -Name "Network Adapter $($index + 1)" -SwitchName ([string]$network.SwitchName) -Passthru
    }
    if ([int]$network.VlanId -gt 0) {
        Set-VMNetworkAdapterVlan -VMNetworkAdapter $adapter -Access -VlanId ([int]$network.VlanId)
    }
    else {
        Set-VMNetworkAdapterVlan -VMNetworkAdapter $adapter -Untagged
    }
    $index++
}
Set-VM -VM $vm -Notes $Notes

if ($Kvp) {
    $vmms = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_VirtualSystemManagementService'
    $system = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_ComputerSystem' -Filter "Name = '$($vm.Id)'"
    foreach ($key in $Kvp.Keys) {
        $item = New-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_KvpExchangeDataItem' -ClientOnly -Property @{
            Name   = [string]$key
            Data   = [string]$Kvp[$key]
            Source = [uint16]0
        }
        $serializer = [Microsoft.Management.Infrastructure.Serialization.CimSerializer]::Create()
        $text = [System.Text.Encoding]::Unicode.GetString($serializer.Serialize($item, [Microsoft.Management.Infrastructure.Serialization.InstanceSerializationOptions]::None))
        $null = Invoke-CimMethod -InputObject $vmms -MethodName 'AddKvpItems' -Arguments @{ TargetSystem = $system; DataItems = @($text) }
    }
}

function New-HcpIso {
    param(
        [Parameter(Mandatory)][string]$Path,
        [Parameter(Mandatory)][string]$Label,
        [Parameter(Mandatory)][hashtable[]]$Files
    )
    $fsi = New-Object -ComObject IMAPI2FS.MsftFileSystemImage
    $fsi.FileSystemsToCreate = 3
    $fsi.VolumeName = $Label
    foreach ($file in $Files) {
        $bytes = [System.Text.Encoding]::UTF8.GetBytes($file.Text)
        $stream = New-Object -ComObject ADODB.Stream
        $stream.Type = 1
        $stream.Open()
        $stream.Write($bytes)
        $stream.Position = 0
        $fsi.Root.AddFile($file.Name, $stream)
    }
    $image = $fsi.CreateResultImage()
    $out = [System.IO.File]::Create($Path)
    try {
        $image.ImageStream.Seek(0, 0) | Out-Null
        $chunk = New-Object byte[] 2048
        for ($block = 0; $block -lt $image.TotalBlocks; $block++) {
            $image.ImageStream.Read($chunk, 2048, [System.IntPtr]::Zero)
            $out.Write($chunk, 0, 2048)
        }
    }
    finally {
        $out.Dispose()
    }
}

if ($PSBoundParameters.ContainsKey('UserData') -and $null -ne $UserData) {
    # A NoCloud seed ISO: volume label "cidata" with the files user-data and meta-data.
    $isoPath = Join-Path -Path $VhdDir -ChildPath "$Name-$VmId-cidata.iso"
    New-HcpIso -Path $isoPath -Label 'cidata' -Files @(
        @{ Name = 'user-data'; Text = $UserData },
        @{ Name = 'meta-data'; Text = "instance-id: $VmId`nlocal-hostname: $Name`n" })
    Add-VMDvdDrive -VM $vm -Path $isoPath
}
if ($PSBoundParameters.ContainsKey('Unattend') -and $null -ne $Unattend) {
    # Windows Setup reads autounattend.xml from the root of removable media; the ISO holds
    # secrets and is detached and deleted when setup signals completion (Complete-HcpGuestSetup).
    $isoPath = Join-Path -Path $VhdDir -ChildPath "$Name-$VmId-unattend.iso"
    New-HcpIso -Path $isoPath -Label 'UNATTEND' -Files @(@{ Name = 'autounattend.xml'; Text = $Unattend })
    Add-VMDvdDrive -VM $vm -Path $isoPath
}
foreach ($iso in @($IsoPaths | Where-Object { $_ })) {
    Add-VMDvdDrive -VM $vm -Path $iso
}
Write-HcpProgress -Percent 80 -Message "virtual machine $($vm.Id) created"
if ($Cluster) {
    $null = Add-ClusterVirtualMachineRole -VMId $vm.Id
}
if ($Start) {
    Start-VM -VM $vm
}
$vm = Get-VM -Id $vm.Id
[ordered]@{ Id = $vm.Id.ToString(); State = $vm.State.ToString(); Existing = $false; OwnerNode = $vm.ComputerName }
